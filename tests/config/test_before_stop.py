"""`idle.before_stop` in the config: the argv rules of POST /exec, bounded durations, and
errors that name the key."""

from __future__ import annotations

import pytest

from pxproxy.config.models import BeforeStop

from .helpers import parse, problems_of, with_routes


def game_route(before_stop: str) -> str:
    return with_routes(
        f"""
        - listen: "0.0.0.0:25565"
          guest: mc
          port: 25565
          idle:
            timeout: 30m
            before_stop: {before_stop}
        """
    )


def settings_of(before_stop: str) -> BeforeStop | None:
    (route,) = parse(game_route(before_stop)).routes
    assert route.idle is not None
    return route.idle.before_stop


def test_a_command_with_grace_and_timeout() -> None:
    assert settings_of(
        '{exec: [rcon-cli, say, "Server stops in 60 s"], grace: 90s, timeout: 10s}'
    ) == BeforeStop(exec=("rcon-cli", "say", "Server stops in 60 s"), grace=90.0, timeout=10.0)


def test_the_defaults_and_shell_characters_that_stay_literal() -> None:
    # `;` and `$()` are quoted like any argument on the exec path: not a config error.
    assert settings_of("{exec: [say, 'bye; $(reboot)']}") == BeforeStop(
        exec=("say", "bye; $(reboot)"), grace=60.0, timeout=30.0
    )
    # A grace of 0: the command (a `save-all`), then the stop at once.
    assert settings_of("{exec: [save-all], grace: 0}") == BeforeStop(exec=("save-all",), grace=0)


def test_no_before_stop_by_default() -> None:
    config = parse(with_routes("- {host: wiki.example.com, guest: wiki, port: 80, idle: {}}"))
    assert config.routes[0].idle is not None
    assert config.routes[0].idle.before_stop is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{exec: []}", "exec: argv must not be empty"),
        ("{exec: [-rf]}", "exec: argv[0] must name a command, not an option"),
        ('{exec: [" "]}', "exec: argv[0] must name a command"),
        ('{exec: [say, "a\\nb"]}', "exec: argv[1] contains U+000A LINE FEED at position 1"),
        ('{exec: [say, "\\e[2J"]}', "exec: argv[1] contains U+001B ESCAPE at position 0"),
        ('{exec: [say, "\\u202Eevil"]}', "exec: argv[1] contains U+202E"),
        ("{exec: [say, 3]}", "exec: argv[1] is not a string"),
        ("{exec: rcon-cli say hi}", "exec: must be a list of strings"),
        ("{grace: 1m}", "exec: required, but missing"),
        ("{exec: [say], grace: 2h}", "grace: must be at most 1h"),
        ("{exec: [say], grace: -1}", "grace: invalid duration"),
        ("{exec: [say], timeout: 0}", "timeout: must be more than 0s"),
        ("{exec: [say], timeout: 11m}", "timeout: must be at most 10m"),
        ("{exec: [say], shell: true}", "shell: unknown key"),
    ],
)
def test_bad_settings_name_the_key(value: str, problem: str) -> None:
    (line,) = problems_of(game_route(value))
    assert line.startswith(f"routes[0].idle.before_stop.{problem}"), line


def test_an_argv_too_long_for_the_exec_path_is_refused() -> None:
    words = ", ".join(["x" * 100] * 100)  # 10 KB: more than POST /exec takes
    (line,) = problems_of(game_route(f"{{exec: [say, {words}]}}"))
    assert line.startswith("routes[0].idle.before_stop.exec: argv is longer than 8192 bytes")
