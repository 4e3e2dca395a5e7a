"""Event loop setup (uvloop when available) and logging setup."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any, TextIO, TypeVar

from .log_format import LogFormat, make_formatter

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def setup_logging(
    level: str, fmt: LogFormat = "text", *, stream: TextIO | None = None, prefix: str = ""
) -> None:
    """One handler on the root logger, to stderr unless `stream` is given. Either format
    blanks credentials (Authorization, Cookie, ...), even in a traceback."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt, prefix))
    root = logging.getLogger()
    for old in list(root.handlers):  # a second call replaces the first's handler
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
