"""Request-targets: the forms a client may send, and the one authority they give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.proxy.authority import (
    INVALID_TARGET,
    Authority,
    BadAuthority,
    parse_host,
    parse_target,
)


@pytest.mark.parametrize(
    ("target", "authority", "path"),
    [
        ("/", None, "/"),
        ("/a/b?c=d&e", None, "/a/b?c=d&e"),
        ("//double/slash", None, "//double/slash"),
        ("/p%20q?x=%41", None, "/p%20q?x=%41"),
        ("/?", None, "/?"),
        ("/a:b@c!$&'()*+,;=~", None, "/a:b@c!$&'()*+,;=~"),
        ("*", None, "*"),
        ("http://wiki.t.test/x?y=1", Authority("wiki.t.test"), "/x?y=1"),
        ("http://wiki.t.test", Authority("wiki.t.test"), "/"),
        ("http://wiki.t.test?q", Authority("wiki.t.test"), "/?q"),
        ("http://wiki.t.test:8080/", Authority("wiki.t.test", 8080), "/"),
        ("HTTP://WIKI.T.TEST./a", Authority("wiki.t.test"), "/a"),
        ("HtTpS://wiki.t.test/a", Authority("wiki.t.test"), "/a"),
        ("http://[::1]:80/a", Authority("::1", 80), "/a"),
        # userinfo is dropped: never routed by, never forwarded
        ("http://user:pw@wiki.t.test/a", Authority("wiki.t.test"), "/a"),
        ("http://raw.t.test:80@wiki.t.test/", Authority("wiki.t.test"), "/"),
        ("http://a%40b:%3a@wiki.t.test/", Authority("wiki.t.test"), "/"),
        ("http://@wiki.t.test/", Authority("wiki.t.test"), "/"),
        ("http://wiki.t.test/a@b", Authority("wiki.t.test"), "/a@b"),  # '@' in the path
    ],
)
def test_valid_targets(target: str, authority: Authority | None, path: str) -> None:
    assert parse_target(target) == (authority, path)


@pytest.mark.parametrize(
    "target",
    [
        "",
        "a/b",  # relative
        "wiki.t.test:443",  # authority-form: CONNECT's, which gets 405 before this
        "wiki.t.test",
        "**",
        "*/",
        "/a#frag",
        "http://wiki.t.test/#",
        "/a b",
        "/a\tb",
        "/a\x00",
        "/a\r\n",
        "/\x7f",
        "/é",
        "ftp://wiki.t.test/",
        "ws://wiki.t.test/",
        "http:/wiki.t.test/",
        "http:wiki.t.test",
        "http//wiki.t.test/",
        "://wiki.t.test/",
        "http://",
        "http:///a",
        "http://:80/",
        "http://a@b@wiki.t.test/",  # two '@': which one ends the userinfo?
        "http://us[er@wiki.t.test/",
        "http://user%@wiki.t.test/",
        "http://user%4@wiki.t.test/",
        "http://user%zz@wiki.t.test/",
        "http://wiki.t.test:abc/",
        "http://wiki.t.test../",
        "http://[wiki.t.test]/",
        "http://.wild.t.test/",
        "http://x..wild.t.test/",
        "http://::1/",
        "http://wiki.t.test:/",
        "http://wiki.t.test\\@raw.t.test/",
    ],
)
def test_invalid_targets(target: str) -> None:
    with pytest.raises(BadAuthority):
        parse_target(target)


def test_messages_are_fixed() -> None:
    with pytest.raises(BadAuthority, match=f"^{INVALID_TARGET}$"):
        parse_target("/secret value")
    with pytest.raises(BadAuthority, match=r"^invalid port$"):
        parse_target("http://wiki.t.test:secret/")


def test_the_same_host_grammar_as_host_headers() -> None:
    authority, _ = parse_target("http://Wiki.T.Test.:80/")
    assert authority == parse_host("wiki.t.test:80")


_path = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?", max_size=30)


@given(_path)
def test_origin_form_is_forwarded_as_is(rest: str) -> None:
    assert parse_target("/" + rest) == (None, "/" + rest)


@given(st.text(max_size=60))
def test_any_text_is_parsed_or_refused_with_bad_authority(text: str) -> None:
    try:
        authority, path = parse_target(text)
    except BadAuthority:
        return
    assert path == "*" or path.startswith("/")
    assert "#" not in path
    assert " " not in path
    if authority is not None:
        assert parse_host(authority.text) == authority


@given(st.sampled_from(["http://", "https://", "HTTP://"]), st.text(max_size=40))
def test_absolute_form_text_is_parsed_or_refused(scheme: str, rest: str) -> None:
    try:
        authority, path = parse_target(scheme + rest)
    except BadAuthority:
        return
    assert authority is not None
    assert "@" not in authority.host
    assert path.startswith("/")
