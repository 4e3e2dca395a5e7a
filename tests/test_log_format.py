"""The JSON log format: one parseable object per record, its fields, and redaction of every
string in it; the text format with the demo's prefix redacts too."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pxproxy.log_format import JsonFormatter, make_formatter, structured_fields
from pxproxy.log_redaction import REDACTED
from pxproxy.runtime import setup_logging

SECRET = "tok-1a2b3c4d5e6f"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("pxproxy.wake.waker", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_one_object_with_ts_level_logger_msg_and_the_extra_fields() -> None:
    rec = record("idle-watch: %s ready after %.2fs", "wiki", 1.234, guest="wiki", duration_s=1.234)
    rec.created = 1_700_000_000.5
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry == {
        "ts": "2023-11-14T22:13:20.500+00:00",
        "level": "INFO",
        "logger": "pxproxy.wake.waker",
        "msg": "idle-watch: wiki ready after 1.23s",
        "guest": "wiki",
        "duration_s": 1.234,
    }
    assert datetime.fromisoformat(entry["ts"]).tzinfo == UTC


def test_only_extra_fields_are_structured() -> None:
    assert structured_fields(record("plain")) == {}
    assert structured_fields(record("x", route="a.test", nodes=["pve1"])) == {
        "route": "a.test",
        "nodes": ["pve1"],
    }


def test_message_fields_and_traceback_are_redacted_and_still_parse() -> None:
    try:
        raise ValueError(f'bad header "Authorization: Bearer {SECRET}"')
    except ValueError:
        rec = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "request had Cookie: %s",
            (f"sid={SECRET}",),
            sys.exc_info(),
        )
    rec.__dict__.update(header=f"Bearer {SECRET}", headers=[f"X-Api-Key: {SECRET}"])
    line = JsonFormatter().format(rec)
    assert SECRET not in line
    entry = json.loads(line)
    assert entry["msg"] == f"request had Cookie: {REDACTED}"
    assert entry["header"] == f"Bearer {REDACTED}"
    assert entry["headers"] == [f"X-Api-Key: {REDACTED}"]
    assert "Traceback (most recent call last)" in entry["exc"]
    assert "ValueError: bad header" in entry["exc"]


def test_values_json_cannot_hold_are_written_as_text() -> None:
    entry = json.loads(JsonFormatter().format(record("x", where=("a", 1), obj=object)))
    assert entry["where"] == ["a", 1]
    assert entry["obj"] == "<class 'object'>"


def test_the_text_format_keeps_its_prefix_and_redacts() -> None:
    line = make_formatter("text", "[pxproxy] ").format(record("token %s", f"Bearer {SECRET}"))
    assert line.startswith("[pxproxy] ")
    assert line.endswith(f" INFO pxproxy.wake.waker: token Bearer {REDACTED}")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_setup_logging_json_writes_parseable_lines_at_the_level() -> None:
    out = io.StringIO()
    setup_logging("warning", "json", stream=out)
    log = logging.getLogger("pxproxy.test")
    log.info("not written")
    log.warning("cluster %s: degraded", "lab", extra={"cluster": "lab"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert (entry["level"], entry["msg"], entry["cluster"]) == (
        "WARNING",
        "cluster lab: degraded",
        "lab",
    )
