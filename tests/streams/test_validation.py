"""Validation rules and their messages (the API-level corpus is in test_hostile.py)."""

from __future__ import annotations

import pytest

from pxproxy.streams.guest_commands import in_container, shell_line, tail_argv
from pxproxy.streams.validation import (
    ValidationError,
    validate_argv,
    validate_limit,
    validate_path,
    validate_timeout,
    validate_unit,
)


def test_message_names_the_character_and_position() -> None:
    with pytest.raises(ValidationError) as info:
        validate_argv(["echo", "ok", "abcd\nx"])
    assert str(info.value) == "argv[2] contains U+000A LINE FEED at position 4"
    with pytest.raises(ValidationError, match=r"U\+2028 LINE SEPARATOR"):
        validate_argv(["echo", "a\u2028b"])
    with pytest.raises(ValidationError, match=r"U\+0085 NEXT LINE"):
        validate_argv(["echo", "a\u0085b"])
    with pytest.raises(ValidationError, match=r"U\+202E RIGHT-TO-LEFT OVERRIDE"):
        validate_argv(["echo", "a\u202eb"])


def test_argv_shape() -> None:
    assert validate_argv(["ls", "-l", ""]) == ["ls", "-l", ""]
    for bad in ("ls", [], [1], ["-rf"], [" "], ["x"] * 300, ["x" * 9000]):
        with pytest.raises(ValidationError):
            validate_argv(bad)


def test_paths() -> None:
    assert validate_path("/var/log/syslog") == "/var/log/syslog"
    assert validate_path("/var/log/--follow=name") == "/var/log/--follow=name"
    for bad in ("var/log", "/var/../etc", "/var/./log", "//etc", "/var/log/", "/a\u200bb"):
        with pytest.raises(ValidationError):
            validate_path(bad)
    assert validate_path("/var/log/nginx/a.log", allowed_prefixes=["/var/log"])
    with pytest.raises(ValidationError, match="outside the paths"):
        validate_path("/var/logs/x", allowed_prefixes=["/var/log"])


def test_units_limits_timeouts() -> None:
    assert validate_unit("getty@tty1.service") == "getty@tty1.service"
    for bad in ("-f", "a b", "a;b", "..", "x" * 300, ""):
        with pytest.raises(ValidationError):
            validate_unit(bad)
    assert validate_limit("1000") == 1000
    assert validate_limit(None, default=7) == 7
    for bad_limit in ("0", "1001", "+5", " 5", "1_0", "١٠", "0x10", ""):
        with pytest.raises(ValidationError):
            validate_limit(bad_limit)
    assert validate_timeout(None, 5.0) == 5.0
    for bad_timeout in (True, "5", 0, -1, 1e9, float("nan")):
        with pytest.raises(ValidationError):
            validate_timeout(bad_timeout, 5.0)


def test_commands_quote_every_word_and_end_options() -> None:
    line = shell_line(in_container(101, ["printf", "%s", "; id", "$(id)"]))
    assert line == "pct exec 101 -- printf %s '; id' '$(id)'"
    assert tail_argv(5, ["/var/log/-n 9"], True) == ["tail", "-n", "5", "-F", "--", "/var/log/-n 9"]
