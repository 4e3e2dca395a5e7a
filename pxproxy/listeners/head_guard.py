"""A protocol in front of aiohttp's: it bounds each request head (total bytes, header count,
time to arrive) and the connections per client address, before aiohttp buffers anything.

aiohttp limits each header line but not their number times their size, nor the time a head may
take; so the guard parses the same bytes with httptools (llhttp) and forwards them to aiohttp's
protocol only while they are within the limits. Bodies are not counted (the parser reports them
to no callback, so they are not copied either). After an Upgrade request the guard keeps
parsing only if what follows is HTTP again (a declined upgrade); a WebSocket's frames are not
HTTP and end the guarding of that connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from .rejections import RejectionLog
from .server_header import SERVER_NAME

# A rejected client gets up to this long to read its answer while we discard what it still
# sends (closing with unread data would reset the connection and lose the answer); the
# connection closes sooner once the client has sent nothing for LINGER_QUIET_S.
LINGER_S = 2.0
LINGER_QUIET_S = 0.2
# "GET", the spaces, "HTTP/1.1" and CRLF around the target that on_url reports.
_REQUEST_LINE_OVERHEAD = 16
_REASONS = {
    400: "Bad Request",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class HeadLimits:
    max_head_bytes: int
    max_headers: int
    header_timeout_s: float
    # Concurrent connections one client address may hold; None: no limit.
    max_connections_per_client: int | None = None


def plain_response(status: int, text: str, extra: str = "") -> bytes:
    """A complete HTTP/1.1 response that closes the connection."""
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nServer: {SERVER_NAME}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + body


class ClientSlots:
    """Open connections per client address."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        count = self._open.get(client, 0)
        if self._limit is not None and count >= self._limit:
            return False
        self._open[client] = count + 1
        return True

    def release(self, client: str) -> None:
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    def open_connections(self, client: str) -> int:
        return self._open.get(client, 0)


class ListenerGuard:
    """What every connection of one listener shares: its limits, its slots and its log."""

    def __init__(self, name: str, limits: HeadLimits, log: RejectionLog | None = None) -> None:
        self.name = name
        self.limits = limits
        self.slots = ClientSlots(limits.max_connections_per_client)
        self.reject_log = log or RejectionLog(name)
        # The open connections, so what they wait for can be seen (/metrics, tests).
        self.connections: set[HeadGuard] = set()

    def head_timers(self) -> int:
        """Connections whose head timer runs: the ones the header timeout could close."""
        return sum(1 for conn in self.connections if conn.timing)

    def protocol(self, make_inner: Callable[[], asyncio.Protocol]) -> HeadGuard:
        return HeadGuard(make_inner, self)


class _LimitExceeded(Exception):
    """Raised inside a parser callback to stop the parser; the reason is on the guard."""


def peer_text(transport: asyncio.BaseTransport) -> tuple[str, str]:
    """(client address, "address:port") of a connection."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return host, (f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}")
    return "unknown", "unknown"


class HeadGuard(asyncio.Protocol):
    def __init__(self, make_inner: Callable[[], asyncio.Protocol], guard: ListenerGuard) -> None:
        self._make_inner = make_inner
        self._guard = guard
        self._limits = guard.limits
        self._transport: asyncio.Transport | None = None
        self._client = "unknown"
        self.peer = "unknown"
        self._slot = False
        # The protocol we feed; None once the connection is rejected.
        self._inner: asyncio.Protocol | None = None
        # A rejected connection's inner protocol still learns when the connection ends.
        self._detached: asyncio.Protocol | None = None
        # None: not guarding (a connection upgraded to another protocol, or rejected).
        self._parser: httptools.HttpRequestParser | None = None
        self._probing = False  # after an Upgrade request: is what follows HTTP?
        # The request being parsed asks for a protocol aiohttp switches to (WebSocket, CONNECT).
        self._switches = False
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._headers = 0
        self._violation: str | None = None
        self._last_data = 0.0

    # ------------------------------------------------------------------ asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but they are transports.
        self._transport = transport = cast(asyncio.Transport, transport)
        self._client, self.peer = peer_text(transport)
        if not self._guard.slots.acquire(self._client):
            limit = self._limits.max_connections_per_client
            self._guard.reject_log(self.peer, f"over {limit} connections from this address")
            # Closed at once, not lingered on: the point is to free the descriptor.
            transport.write(
                plain_response(
                    503, "too many connections from your address\n", "Retry-After: 1\r\n"
                )
            )
            transport.close()
            return
        self._slot = True
        self._guard.connections.add(self)
        self._parser = httptools.HttpRequestParser(self)
        self._arm_timer()
        inner = self._inner = self._make_inner()
        inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            self._last_data = time.monotonic()  # rejected: discarded while the answer is read
            return
        if self._parser is not None and not self._feed(data):
            return
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    @property
    def timing(self) -> bool:
        """The header timeout is running for this connection."""
        return self._timer is not None and self._inner is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.connections.discard(self)
        self._cancel_timer()
        self._parser = None
        if self._slot:
            self._slot = False
            self._guard.slots.release(self._client)
        inner = self._inner or self._detached
        self._inner = self._detached = None
        if inner is not None:
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        inner = self._inner or self._detached
        if inner is not None:
            inner.pause_writing()

    def resume_writing(self) -> None:
        inner = self._inner or self._detached
        if inner is not None:
            inner.resume_writing()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self._head_bytes = _REQUEST_LINE_OVERHEAD
        self._headers = 0
        self._switches = False
        if not self._probing and self._timer is None:
            self._arm_timer()

    def on_url(self, url: bytes) -> None:
        if self._probing:
            # A method and a target: HTTP after a declined upgrade, not a WebSocket frame.
            self._probing = False
            self._arm_timer()
        self._head_bytes += len(url)
        self._check()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        self._check()
        if name.lower() == b"upgrade" and value.strip().lower() == b"websocket":
            self._switches = True

    def on_headers_complete(self) -> None:
        self._cancel_timer()
        if self._parser is not None and self._parser.get_method() == b"CONNECT":
            self._switches = True

    # ------------------------------------------------------------------ internals

    def _check(self) -> None:
        limits = self._limits
        if self._headers > limits.max_headers:
            self._violation = f"more than {limits.max_headers} header lines"
        elif self._head_bytes > limits.max_head_bytes:
            self._violation = f"request head over {limits.max_head_bytes} bytes"
        else:
            return
        raise _LimitExceeded

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False when the connection was rejected."""
        view: bytes | memoryview = data
        while self._parser is not None and view:
            try:
                self._parser.feed_data(view)
                return True
            except httptools.HttpParserUpgrade as exc:
                # The head of an Upgrade (or CONNECT) request ended inside `data`. What follows
                # is either the new protocol or, if the upgrade is declined, more HTTP.
                offset = int(exc.args[0]) if exc.args else len(view)
                view = memoryview(view)[offset:]
                self._parser = httptools.HttpRequestParser(self)
                if self._switches:
                    self._probing = True
                    self._cancel_timer()
                # Any other Upgrade (h2c, ...) aiohttp never switches to: what follows must be
                # HTTP and stays guarded, so the token cannot turn the limits off.
            except httptools.HttpParserError as exc:
                if self._violation is not None:
                    self._reject(431, self._violation, f"{self._violation}\n")
                elif self._probing:
                    self._parser = None  # not HTTP: the upgrade was accepted
                    self._cancel_timer()
                    return True
                else:
                    self._reject(400, _parse_reason(exc), "the request is not valid HTTP/1.1\n")
                return False
        return True

    def _arm_timer(self) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _header_timeout(self) -> None:
        self._timer = None
        self._guard.reject_log(
            self.peer, f"no complete request head within {self._limits.header_timeout_s:g}s"
        )
        self._parser = None
        if self._transport is not None:
            self._transport.close()

    def _reject(self, status: int, reason: str, text: str) -> None:
        """Answer `status` and close; the inner protocol sees no more data."""
        self._guard.reject_log(self.peer, reason)
        self._detached, self._inner = self._inner, None
        self._parser = None
        self._cancel_timer()
        transport = self._transport
        if transport is None:
            return
        transport.write(plain_response(status, text))
        self._last_data = now = time.monotonic()
        self._linger(now + LINGER_S)

    def _linger(self, end: float) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        now = time.monotonic()
        if now >= end or now - self._last_data >= LINGER_QUIET_S:
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(LINGER_QUIET_S, self._linger, end)


def _parse_reason(exc: Exception) -> str:
    """llhttp's reason ("Invalid header value char"): a fixed text, never request bytes.
    Anything else is not trusted into the log."""
    text = str(exc)
    if len(text) <= 80 and all(c.isalnum() or c in " ,.'`_-" for c in text):
        return f"malformed request ({text})" if text else "malformed request"
    return "malformed request"
