"""`webhooks:`: each mistake names its key; URLs and secrets never print."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproxy.config.loader import ConfigError, parse_config
from pxproxy.webhooks.config import ALL_EVENTS

BASE = 'proxmox: [{url: "https://pve:8006", token_id: a@pve!t, secret: s}]\n'


def problems(hooks: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + "webhooks: " + hooks)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        ('[{name: a, url: "ftp://h/tok3n"}]', "webhooks[0].url: the scheme must be https://"),
        ('[{name: a, url: "https://h:99999/tok3n"}]', "webhooks[0].url: is not a URL"),
        ('[{name: a, url: "https:///tok3n"}]', "webhooks[0].url: has no host"),
        ('[{name: a, url: "https://h/x", format: teams}]', "webhooks[0].format: must be 'json'"),
        ('[{name: a, url: "https://h/x", events: [wake, wakes]}]', "webhooks[0].events[1]: "),
        ('[{name: a, url: "https://h/x", events: []}]', "webhooks[0].events: needs at least 1"),
        (
            '[{name: a, url: "https://h/x", format: slack, secret: z}]',
            "webhooks[0].secret: a slack",
        ),
        ('[{name: a, url: "https://h/x", guests: ["a:b:c"]}]', "webhooks[0].guests[0]: 'a:b:c'"),
        (
            '[{name: a, url: "https://h/x", backoff: 10s, backoff_max: 1s}]',
            "webhooks[0].backoff_max: must be at least backoff (10s)",
        ),
        ('[{name: "a b", url: "https://h/x"}]', "webhooks[0].name: 'a b' is not a name"),
        (
            '[{name: a, url: "https://h/x"}, {name: a, url: "https://h/y"}]',
            "webhooks: webhook names must be unique: a",
        ),
        (
            '[{name: a, url: "https://h/x", retry: 3}]',
            "webhooks[0].retry: unknown key; did you mean retries?",
        ),
    ],
)
def test_mistakes_name_their_key(hooks: str, expected: str) -> None:
    found = problems(hooks)
    assert any(p.startswith(expected) for p in found), found
    assert not any("tok3n" in p for p in found)  # the URL's path is never repeated


def test_defaults_and_env_substitution() -> None:
    text = BASE + 'webhooks: [{name: ops, url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}]'
    config = parse_config(
        text, env={"HOOK_URL": "https://h.example:8443/t/abc?k=1", "HOOK_SECRET": "s"}
    )
    (hook,) = config.webhooks
    assert hook.format == "json"
    assert hook.events == ALL_EVENTS
    assert hook.retries == 5
    assert hook.guests == ("*",)
    assert hook.host == "h.example:8443"
    assert "abc" not in repr(hook)
    assert "s'" not in repr(hook.secret)


def test_the_example_entry_is_valid() -> None:
    """config.example.yml shows a full entry commented out (so copying the file sends nothing):
    uncommented, it must still be a valid config stating the defaults."""
    example = (Path(__file__).resolve().parents[2] / "config.example.yml").read_text()
    start = example.index("webhooks: []")
    lines = example[start:].split("\n\n", 1)[0].splitlines()[1:]
    block = "webhooks:\n" + "\n".join(" " + line[1:] for line in lines)
    config = parse_config(BASE + block, env={})
    (hook,) = config.webhooks
    defaults = parse_config(BASE + "webhooks: [{name: ops, url: https://h/x}]").webhooks[0]
    shown = hook.model_dump(exclude={"name", "url", "secret"})
    assert shown == defaults.model_dump(exclude={"name", "url", "secret"})
