"""Schema errors in words for people, not pydantic's."""

from __future__ import annotations

import pytest

from .helpers import MINIMAL, problems_of, with_routes

TOKEN = "api:\n  tokens:\n    - {name: ops, secret: 0123456789abcdef, FIELD}\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            TOKEN.replace("FIELD", 'guests: "*"'),
            'api.tokens[0].guests: must be a list, e.g. ["*"]',
        ),
        (
            TOKEN.replace("FIELD", "scopes: read"),
            'api.tokens[0].scopes: must be a list, e.g. ["read"]',
        ),
        (
            TOKEN.replace("FIELD", "paths: {a: 1}"),
            "api.tokens[0].paths: must be a list, e.g. [a, b] (or one '- item' line each)",
        ),
        (
            TOKEN.replace("FIELD", "scopes: [admin]"),
            "api.tokens[0].scopes[0]: must be 'read', 'power', 'exec' or 'node-exec', not 'admin'",
        ),
        (
            "    tls: true\n",
            "proxmox[0].tls: must be a mapping (key: value lines, or {key: value}), not true/false",
        ),
        ("    tls: {verify: maybe}\n", 'proxmox[0].tls.verify: must be true or false, not "maybe"'),
        (
            "    resolve_concurrency: lots\n",
            'proxmox[0].resolve_concurrency: must be a whole number, not "lots"',
        ),
        ("    resolve_concurrency: 0\n", "proxmox[0].resolve_concurrency: must be at least 1"),
        ("    name: [a]\n", "proxmox[0].name: must be text, not a list"),
        ("api: {header_timeout: 0s}\n", "api.header_timeout: must be at least 100ms"),
        ("api: {keepalive_timeout: 2h}\n", "api.keepalive_timeout: must be at most 1h"),
        ("listen: {prxy: '127.0.0.1:1'}\n", "listen.prxy: unknown key; did you mean proxy?"),
        (
            "listen: {web: '127.0.0.1:1'}\n",
            "listen.web: unknown key; the keys here are proxy, api",
        ),
        (
            "guests: {wiki: {alias: [docs]}}\n",
            "guests.wiki.alias: unknown key; did you mean aliases?",
        ),
        ("loglevel: debug\n", "loglevel: unknown key; did you mean log_level?"),
    ],
)
def test_messages(text: str, line: str) -> None:
    # Lines that start with spaces extend the cluster entry; others are top-level keys.
    assert problems_of(MINIMAL + text) == [line]


def test_nested_unknown_key_in_a_route() -> None:
    lines = problems_of(with_routes("- {host: a.b, guest: a, port: 80, idle: {timout: 5m}}"))
    assert lines == ["routes[0].idle.timout: unknown key; did you mean timeout?"]


def test_required_key() -> None:
    assert problems_of(with_routes("- {host: a.b, port: 80}")) == [
        "routes[0].guest: required, but missing"
    ]


def test_a_secret_of_the_wrong_type_is_not_shown() -> None:
    (line,) = problems_of(
        MINIMAL + "api:\n  tokens:\n    - {name: ops, secret: 12345678901234567}\n"
    )
    assert line == "api.tokens[0].secret: must be text, not a number"
    assert "12345678901234567" not in line


def test_every_missing_variable_and_no_follow_on_error() -> None:
    lines = problems_of(
        MINIMAL.replace("token-secret-value", "${PVE_SECRET}")
        + "api:\n  tokens:\n    - {name: ops, secret: '${OPS_A}${OPS_B}'}\n"
    )
    # An empty secret would be "too short": that follows from the missing variable, so it
    # is not said again.
    assert lines == [
        "proxmox[0].secret: environment variable PVE_SECRET is not set",
        "api.tokens[0].secret: environment variable OPS_A is not set",
        "api.tokens[0].secret: environment variable OPS_B is not set",
    ]
