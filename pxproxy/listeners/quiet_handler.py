"""aiohttp's request handler with quiet answers to malformed requests.

aiohttp answers a request it cannot parse with a 400 whose body quotes the offending line, and
logs the line in an ERROR traceback: a bearer token with a trailing CR ends up in both. Here
such a request costs one rate-limited log line with the peer and a fixed reason, and its answer
says what was wrong without quoting anything. Errors of our own (500s) keep aiohttp's
traceback, which the log formatter redacts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

from .head_guard import peer_text
from .rejections import RejectionLog
from .server_header import SERVER_NAME

# (reason in the log, status, body); the first class that matches wins.
_ANSWERS: tuple[tuple[type[HttpProcessingError], str, int, str], ...] = (
    (LineTooLong, "a request line or header line is too long", 431, "a header line is too long"),
    (BadHttpMethod, "not an HTTP method", 400, "the request is not valid HTTP/1.1"),
    (BadStatusLine, "malformed request line", 400, "the request line is malformed"),
    (InvalidURLError, "malformed request target", 400, "the request target is malformed"),
    (InvalidHeader, "malformed header", 400, "a header is malformed"),
)


# aiohttp messages that are fixed texts (most quote the request): said as they are.
_FIXED_MESSAGES = {"Missing 'Host' header in request.": "a Host header is required"}


def describe(exc: BaseException | None) -> tuple[str, int, str]:
    """(log reason, status, body text) for a request aiohttp could not parse."""
    if isinstance(exc, HttpProcessingError) and exc.message in _FIXED_MESSAGES:
        text = _FIXED_MESSAGES[exc.message]
        return text, 400, text
    for cls, reason, status, text in _ANSWERS:
        if isinstance(exc, cls):
            return reason, status, text
    return "malformed request head", 400, "the request head is malformed"


class QuietRequestHandler(web.RequestHandler):
    __slots__ = ("_reject_log",)

    def __init__(self, manager: web.Server, *, reject_log: RejectionLog, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._reject_log = reject_log

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 and not isinstance(exc, HttpProcessingError):
            response = super().handle_error(request, status, exc, message)
            response.headers["Server"] = SERVER_NAME
            return response
        transport = request.transport
        peer = peer_text(transport)[1] if transport is not None else "unknown"
        reason, answer, text = describe(exc)
        self._reject_log(peer, reason)
        if request.writer.output_size > 0:
            # Part of a response is out: the connection cannot carry another (as aiohttp does).
            raise ConnectionError("a response was sent already; cannot answer the error")
        response = web.Response(status=answer, text=f"{text}\n", headers={"Server": SERVER_NAME})
        response.force_close()
        return response
