"""The notes parser against what people write and what an attacker who may edit a guest's
notes writes: every hostile input is a NotesError with a message to act on, and fast."""

from __future__ import annotations

import time

import pytest

from pxproxy.routing.notes import MAX_BLOCK_BYTES, NotesError, parse_notes

REF = "lab:7101"


def block(body: str, fence: str = "```yaml") -> str:
    return f"# Wiki\n\nSome notes.\n\n{fence}\n{body}\n```\n\nMore text.\n"


def error(description: str) -> str:
    with pytest.raises(NotesError) as caught:
        parse_notes(description, REF)
    return caught.value.message


def test_a_routes_list_with_idle() -> None:
    notes = block(
        "pxproxy:\n"
        "  routes:\n"
        "    - host: wiki.example.com\n"
        "      port: 8080\n"
        "      idle: {timeout: 15m}\n"
        "    - host: [git.example.com, code.example.com]\n"
        "      port: 3000\n"
        "      scheme: https\n"
        "      path_prefix: /api\n"
    )
    wiki, git = parse_notes(notes, REF)
    assert wiki.host == ("wiki.example.com",)
    assert wiki.port == 8080
    assert wiki.guest == REF
    assert wiki.idle is not None
    assert wiki.idle.timeout == 900
    assert git.host == ("git.example.com", "code.example.com")
    assert git.scheme == "https"
    assert git.path_prefix == "/api"
    assert git.guest == REF


def test_a_single_mapping_in_place_of_routes_and_yml() -> None:
    (route,) = parse_notes(block("pxproxy: {host: a.example, port: 80}", "```yml"), REF)
    assert route.host == ("a.example",)
    assert route.port == 80


def test_a_tcp_route_with_activity() -> None:
    notes = block(
        "pxproxy:\n  listen: 127.0.0.1:25565\n  port: 25565\n  activity: {source: traffic}"
    )
    (route,) = parse_notes(notes, REF)
    assert route.listen == "127.0.0.1:25565"
    assert route.host is None
    assert route.activity.source == "traffic"


def test_fence_variants_crlf_and_markdown_around() -> None:
    crlf = "Intro\r\n```  YAML  \r\npxproxy:\r\n  host: a.example\r\n  port: 80\r\n```\r\n"
    assert parse_notes(crlf, REF)[0].host == ("a.example",)
    indented = "  ```yaml\npxproxy: {host: b.example, port: 81}\n  ````\n"
    assert parse_notes(indented, REF)[0].port == 81


def test_no_block_other_blocks_and_an_empty_list_declare_nothing() -> None:
    assert parse_notes("", REF) == ()
    assert parse_notes("Just prose, with `pxproxy:` inline.", REF) == ()
    assert parse_notes(block("other: {host: a.example}"), REF) == ()
    # A ```yaml line inside a ```text block is text, as Markdown reads it.
    inside = "```text\n```yaml\npxproxy: {host: a.example, port: 80}\n```\n"
    assert parse_notes(inside, REF) == ()
    assert parse_notes(block("pxproxy:\n  routes: []"), REF) == ()


def test_another_yaml_block_is_ignored_even_when_hostile() -> None:
    notes = (
        "```yaml\nbomb: &a [x, *a]\n```\n"
        + block("pxproxy: {host: a.example, port: 80}")
        + "```python\nprint('hi')\n```\n"
    )
    assert parse_notes(notes, REF)[0].host == ("a.example",)


def test_the_guest_key_is_refused() -> None:
    message = error(block("pxproxy: {host: a.example, port: 80, guest: other:9999}"))
    assert message.startswith("pxproxy.guest: not allowed in notes")
    assert REF in message


def test_depends_on_is_refused() -> None:
    message = error(block("pxproxy: {host: a.example, port: 80, idle: {depends_on: [db]}}"))
    assert message.startswith("pxproxy.idle.depends_on: not allowed in notes")


def test_wrong_types_name_their_key_paths() -> None:
    assert error(block("pxproxy:\n  routes:\n    - host: a.example\n      port: http")) == (
        'pxproxy.routes[0].port: must be a whole number, not "http"'
    )
    assert error(block("pxproxy:\n  host: a.example\n  port: null")) == (
        "pxproxy.port: must be a whole number, not empty"
    )
    assert error(block("pxproxy: [a, b]")).startswith("pxproxy: must be a mapping")
    assert error(block("pxproxy:\n  routes: {host: a}")).startswith(
        "pxproxy.routes: must be a list of routes"
    )
    assert error(block("pxproxy:\n  routes: [a.example]")).startswith(
        "pxproxy.routes[0]: must be a mapping"
    )
    assert error(block("pxproxy:")).startswith("pxproxy: empty")
    assert "pxproxy.host[1]: must be text, not a mapping" in error(
        block("pxproxy: {host: [a.example, {x: 1}], port: 80}")
    )
    assert error(block("pxproxy: {host: a.example, port: 80, scheme: ftp}")) == (
        "pxproxy.scheme: must be 'http' or 'https', not 'ftp'"
    )


def test_unknown_keys_get_a_suggestion() -> None:
    assert error(block("pxproxy: {host: a.example, prot: 80}")).count("did you mean port?") == 1
    assert error(block("pxproxy: {host: a.example, port: 80}\nextra: 1")) == (
        "extra: unknown key; a notes block holds only pxproxy: at its top"
    )
    assert error(block("pxproxy:\n  routes: []\n  host: a.example")).startswith(
        "pxproxy.host: unknown key beside routes"
    )


def test_several_problems_in_one_message() -> None:
    message = error(
        block("pxproxy:\n  routes:\n    - {host: a.example, port: x}\n    - {port: 80}\n")
    )
    assert message.startswith("2 problems: ")
    assert "pxproxy.routes[0].port" in message
    assert "pxproxy.routes[1]" in message


def test_a_host_twice_and_a_zero_idle_timeout() -> None:
    routes = "    - {host: a.example, port: 80}\n    - {host: A.example., port: 81}"
    twice = error(block("pxproxy:\n  routes:\n" + routes))
    assert twice.startswith("pxproxy.routes[1].host: 'A.example.' is already")
    zero = error(block("pxproxy: {host: a.example, port: 80, idle: {timeout: 0}}"))
    assert zero.startswith("pxproxy.idle.timeout: must be more than 0s")


def test_two_pxproxy_blocks() -> None:
    notes = block("pxproxy: {host: a.example, port: 80}") + block(
        "pxproxy: {host: b.example, port: 80}"
    )
    assert error(notes).startswith("2 ```yaml blocks with pxproxy: (on lines 5, 14)")


def test_an_unterminated_fence() -> None:
    message = error("notes\n```yaml\npxproxy: {host: a.example, port: 80}\n")
    assert message == (
        "the ```yaml block on line 2 is not closed: end it with a line of three backticks (```)"
    )


def test_tabs_in_the_indentation() -> None:
    assert error(block("pxproxy:\n\thost: a.example\n\tport: 80")) == (
        "line 7: a tab in the indentation; YAML indents with spaces only"
    )


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x85", "\ud800"])
def test_control_characters_and_lone_surrogates(char: str) -> None:
    message = error(block(f"pxproxy: {{host: a{char}.example, port: 80}}"))
    assert message == (
        f"line 6: holds the control character U+{ord(char):04X}, which YAML does not allow"
    )


def test_a_non_mapping_top_level() -> None:
    # `pxproxy:` at the start of a line makes it a pxproxy block; the YAML then is a list.
    message = error(block("- a\npxproxy: {host: a.example, port: 80}"))
    assert message.startswith("line 7: not valid YAML")
    assert error(block("pxproxy: 1\n---\npxproxy: 2")).startswith("line 7: not valid YAML")


def test_invalid_yaml_names_the_line_of_the_notes() -> None:
    message = error(block("pxproxy: {host: a.example, port: 80"))
    assert message.startswith("line 6: not valid YAML: expected ',' or '}'")


def test_an_alias_bomb_is_refused_without_expanding() -> None:
    bomb = 'pxproxy:\n  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
        f"  {c}: &{c} [{','.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    started = time.perf_counter()
    message = error(block(bomb))
    assert time.perf_counter() - started < 0.1
    assert message == "line 7: YAML anchors (&a) are not allowed in notes"


def test_an_alias_alone_is_refused() -> None:
    assert error(block("pxproxy: *x")) == "line 6: YAML aliases (*x) are not allowed in notes"


def test_deep_nesting_is_refused_before_the_stack_runs_out() -> None:
    assert error(block("pxproxy: " + "[" * 3000 + "]" * 3000)) == (
        "line 6: nested more than 16 levels deep"
    )


def test_a_block_over_8_kib() -> None:
    body = "pxproxy:\n  host: a.example\n  port: 80\n" + "# padding\n" * 900
    message = error(block(body))
    assert f"a notes block may hold at most 8 KiB ({MAX_BLOCK_BYTES} bytes)" in message
    assert message.startswith("the pxproxy block on line 5 is 90")


def test_a_block_of_exactly_8_kib_is_read() -> None:
    head = "pxproxy: {host: a.example, port: 80}\n"
    body = head + "#" * (MAX_BLOCK_BYTES - len(head))
    assert len(body.encode()) == MAX_BLOCK_BYTES
    assert parse_notes(block(body), REF)[0].port == 80


def test_eight_mib_of_text_is_refused_in_milliseconds() -> None:
    for text in ("x" * (8 << 20), "```yaml\n" + "pxproxy:\n" * (1 << 20), "`" * (8 << 20)):
        started = time.perf_counter()
        message = error(text)
        assert time.perf_counter() - started < 0.05
        assert message.startswith(f"the notes are {len(text)} characters long")


def test_many_fences_are_scanned_in_linear_time() -> None:
    text = "```\n" * 15000  # 60 KB of fences opening and closing: no backtracking
    started = time.perf_counter()
    assert parse_notes(text, REF) == ()
    assert time.perf_counter() - started < 0.05


def test_a_number_too_long_for_int() -> None:
    assert error(block("pxproxy: {host: a.example, port: " + "9" * 5000 + "}")) == (
        "not valid YAML: a number too long to read"
    )


def test_non_string_keys() -> None:
    assert error(block("pxproxy: {1: a, port: 80}")) == "pxproxy: the key 1 is not a name"


def test_messages_stay_short() -> None:
    routes = "".join(f"    - {{host: h{i}.example, port: {70000 + i}}}\n" for i in range(30))
    message = error(block("pxproxy:\n  routes:\n" + routes))
    assert message.startswith("30 problems: ")
    assert message.endswith("; and 25 more")
    assert len(error(block("pxproxy: {" + "k" * 5000 + ": 1}"))) <= 1000


def test_too_many_routes() -> None:
    routes = "".join(f"    - {{host: h{i}.example, port: 80}}\n" for i in range(33))
    assert error(block("pxproxy:\n  routes:\n" + routes)) == (
        "pxproxy.routes: 33 routes; notes may declare at most 32"
    )
