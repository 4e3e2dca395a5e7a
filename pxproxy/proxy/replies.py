"""The proxy's own answers (problems, refusals, the loading page) as bytes on the wire.

The data path writes to transports, not through a web framework: an answer is a status, its
headers and a body, encoded once. Problem documents are Problem.json() (pxproxy/problems.py),
so the proxy and the API answer errors alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from ..listeners.server_header import SERVER_NAME
from ..problems import CONTENT_TYPE, Problem

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    # The connection ends after this answer (413 with an unread body, refusals, stopping).
    close: bool = False
    # The problem this answer carries, if it is one: a browser gets it as an HTML page
    # instead (waiting.for_client).
    problem: Problem | None = None

    def encode(self, *, keep_alive: bool, head_only: bool = False) -> bytes:
        """The whole response; `keep_alive` False adds `Connection: close`."""
        lines = [f"HTTP/1.1 {self.status} {reason(self.status)}\r\nServer: {SERVER_NAME}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        lines.append(f"Content-Length: {len(self.body)}\r\n")
        if not keep_alive or self.close:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1", "replace")
        return head if head_only else head + self.body


def text_reply(
    status: int, text: str, *, headers: Iterable[tuple[str, str]] = (), close: bool = False
) -> Reply:
    return Reply(
        status,
        (("Content-Type", "text/plain; charset=utf-8"), *headers),
        text.encode(),
        close,
    )


def html_reply(
    status: int, page: str, *, headers: Iterable[tuple[str, str]] = (), close: bool = False
) -> Reply:
    return Reply(
        status, (("Content-Type", "text/html; charset=utf-8"), *headers), page.encode(), close
    )


def problem_reply(error: Problem, *, close: bool = False) -> Reply:
    return Reply(
        error.status,
        (("Content-Type", CONTENT_TYPE), *error.headers.items()),
        error.json().encode(),
        close,
        error,
    )


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    close: bool = False,
    **extra: Any,
) -> Reply:
    """A problem made on the spot (the proxy's own answers)."""
    return problem_reply(Problem(status, title, detail, headers=headers, **extra), close=close)
