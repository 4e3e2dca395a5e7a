"""The client side of the proxy: one `asyncio.Protocol` per connection, httptools (llhttp)
parsing its requests, no Task per request.

A connection parses a request head, checks it (request.py), and hands it to the dispatcher,
which returns the handler that answers it: an exchange with a guest (exchange.py), or one of
the proxy's own answers. The body goes to that handler as it arrives, and the handler writes
the response back through the connection. Pipelined requests wait their turn, with reading
paused, so nothing piles up. Head size, header count, the time a head may take and keep-alive
idleness are bounded here. The timeouts are checked by one sweep per server, not by a timer
per request.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import termios
import time
from collections import deque
from typing import Final, Protocol, cast

import httptools

from ..listeners.rejections import RejectionLog
from .relay import RelayCheck
from .replies import Reply, text_reply
from .request import ClientRequest, Refusal, check_head

log = logging.getLogger(__name__)

# A refused client gets up to this long to read its answer while what it still sends is
# discarded (closing with unread data would reset the connection and lose the answer); the
# connection closes sooner once the client has sent nothing for LINGER_QUIET_S.
LINGER_S: Final = 2.0
LINGER_QUIET_S: Final = 0.2
SWEEP_INTERVAL_S: Final = 0.25
# Requests parsed ahead of their turn (one read's worth could be thousands): past this, the
# next is refused in its turn and the connection closes.
MAX_PIPELINED: Final = 32
# "GET", the spaces, "HTTP/1.1" and CRLFs around what the parser reports, per head and line.
_LINE_OVERHEAD = 16
_FIELD_OVERHEAD = 4

_HEAD, _BUSY, _IDLE, _TUNNEL, _LINGER, _CLOSED = range(6)


class Handler(Protocol):
    """What answers one request: fed its body, told of the client's flow and departure."""

    def client_body(self, data: bytes) -> None: ...

    def client_body_end(self) -> None: ...

    def client_flush(self) -> None:
        """One read from the client was handled: write out what it produced."""

    def client_writable(self) -> None:
        """The client's write buffer drained after filling."""

    def client_lost(self) -> None: ...

    def stop(self) -> None:
        """The daemon is stopping: end a stream that never ends by itself."""


class Dispatcher(Protocol):
    def dispatch(self, conn: ClientConnection, request: ClientRequest) -> None:
        """Answer the request; the handler it sets on `conn` gets the body."""


class Limits(Protocol):
    @property
    def max_header_size(self) -> int: ...
    @property
    def max_headers(self) -> int: ...
    @property
    def header_timeout(self) -> float: ...
    @property
    def keepalive_timeout(self) -> float: ...
    @property
    def read_timeout(self) -> float: ...


class _Pipelined:
    __slots__ = ("body", "done", "request")

    def __init__(self, request: ClientRequest) -> None:
        self.request = request
        self.body: list[bytes] = []
        self.done = False


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.scheme = server.scheme
        self.handler: Handler | None = None
        self.request: ClientRequest | None = None  # the one being answered
        self.writing_paused = False
        self.stopping = False  # answer what is in flight, then close
        self.deadline = 0.0  # header, keep-alive or linger deadline; 0: none
        self._state = _HEAD
        self._parser = httptools.HttpRequestParser(self)
        self._limits = server.limits
        self._url = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._head_size = 0
        self._raw_head = 0  # bytes fed while in a head: bounds what httptools buffers
        self._in_head = False
        self._queued: deque[_Pipelined] = deque()
        self._feeding: _Pipelined | None = None  # the queued request whose body arrives
        self._current_body = True  # body bytes belong to the current request
        self._paused_by: set[str] = set()
        self._upgrade_rest = b""
        self._stopped_by: ClientRequest | None = None  # its upgrade head stopped llhttp
        self._pending_rest = b""  # bytes after a declined upgrade, parsed once it is answered
        self._refusal: Refusal | None = None
        self._refusal_why: str | None = None
        self._answered = False
        self._last_read = 0.0
        self._write_paused_at = 0.0
        self._write_mark = 0
        self._written = 0  # bytes written to the transport, for _taken()
        self._since_body = 0  # bytes of a chunked body since its last data: trailers, extensions
        self._client_eof = False  # the client half-closed after its request
        self._quiet_until = 0.0

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = t = cast(asyncio.Transport, transport)
        peer = t.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0])
        self.server.connections.add(self)
        self.deadline = time.monotonic() + self._limits.header_timeout

    def data_received(self, data: bytes) -> None:
        self._last_read = time.monotonic()
        state = self._state
        if state == _TUNNEL:
            handler = self.handler
            if handler is not None:
                handler.client_body(data)
                handler.client_flush()
            return
        if state == _LINGER:
            self._quiet_until = time.monotonic() + LINGER_QUIET_S
            return
        if state == _CLOSED:
            return
        if state == _IDLE:
            self._state = _HEAD
            self.deadline = time.monotonic() + self._limits.header_timeout
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._in_head or self._state == _HEAD:
            self._raw_head += len(data)
        elif self._in_chunked_body():
            self._since_body += len(data)  # httptools buffers a trailer whole: bound it
        parser = self._parser
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # The head of an upgrade was parsed; llhttp stops there. What follows is the new
            # protocol's, or, if the guest declines, HTTP again.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            rest = data[offset:]
            if self._parser is not parser:
                # Answered already, inside the feed (a refused handshake): HTTP goes on.
                if rest and self._state not in (_CLOSED, _LINGER, _TUNNEL):
                    self._pending_rest += rest
                    if self.handler is None:
                        self._state = _HEAD
                        rest, self._pending_rest = self._pending_rest, b""
                        self._feed(rest)
                return
            self._upgrade_rest += rest
            self._pause("upgrade")  # until the guest says yes (a tunnel) or no (HTTP again)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refusal):
                self._refuse(cause)
            else:
                # A bug of ours while answering: this connection ends, the proxy serves on.
                log.error("proxy: error handling a request from %s", self.peer, exc_info=cause)
                handler, self.handler = self.handler, None
                if handler is not None:
                    handler.client_lost()
                self.abort()
        except httptools.HttpParserError as exc:
            # llhttp's wording is fixed text ("Invalid header token"), never request bytes.
            self._refuse(Refusal(400, "malformed request\n"), str(exc) or "malformed request")
        else:
            limit = self._limits.max_header_size + _LINE_OVERHEAD
            if self._in_head and self._raw_head > limit:
                self._refuse(Refusal(431, "request head too large\n"))
            elif self._since_body > limit and self._in_chunked_body():
                self._since_body = 0
                self._refuse(Refusal(431, "request trailers too large\n"))
        handler = self.handler
        if handler is not None:
            handler.client_flush()

    def eof_received(self) -> bool | None:
        if self._state == _TUNNEL and self.handler is not None:
            self.handler.client_body(b"")  # half-close passes to the guest
            self.handler.client_flush()
            return True
        request = self.request
        if self._state == _BUSY and request is not None and request.body_done:
            # A client that half-closed after its request still gets the answer.
            self._client_eof = True
            return True
        return None

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._write_paused_at = time.monotonic()
        self._write_mark = self._taken()

    def _unsent(self) -> int:
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _taken(self) -> int:
        """Bytes the client acknowledged of all written to it: what is still in our buffer
        and in the kernel's send queue is not taken (a socket becomes writable again only
        after a large part of its queue drained, so our own buffer alone shows no progress
        for a slow reader)."""
        return self._written - self._unsent() - self._kernel_queue()

    def _kernel_queue(self) -> int:
        transport = self.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return 0
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return 0
        return int(struct.unpack("i", queued)[0])

    def _stalled_writer(self, now: float) -> bool:
        """The client took nothing of what waits for it for read_timeout (nginx's
        send_timeout). Progress, however slow, pushes the deadline back."""
        taken = self._taken()
        if taken > self._write_mark:
            self._write_mark, self._write_paused_at = taken, now
            return False
        return self._unsent() > 0 and now - self._write_paused_at >= self._limits.read_timeout

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.handler is not None:
            self.handler.client_writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self.server.connections.discard(self)
        handler, self.handler = self.handler, None
        self._queued.clear()
        if handler is not None:
            handler.client_lost()
        self.server.closed_one()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._state == _IDLE:
            self._state = _HEAD
        self._in_head = True
        self._url.clear()
        self._fields = []
        self._head_size = _LINE_OVERHEAD
        if self.handler is None:
            self.deadline = time.monotonic() + self._limits.header_timeout

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer (httptools reports it here): never forwarded
        fields = self._fields
        if len(fields) >= self._limits.max_headers:
            raise Refusal(431, "too many request headers\n")
        self._head_size += len(name) + len(value) + _FIELD_OVERHEAD
        if self._head_size > self._limits.max_header_size:
            raise Refusal(431, "request head too large\n")
        fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head = 0
        parser = self._parser
        method = parser.get_method().decode("latin-1")
        try:
            target = self._url.decode("ascii")
        except UnicodeDecodeError:
            raise Refusal(400, "invalid request target\n") from None
        request = check_head(
            method,
            target,
            parser.get_http_version(),
            self._fields,
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        request.peer = self.peer
        request.scheme = self.scheme
        relay = self.server.relay
        if relay is not None:
            relay.adopt(request)  # a worker's request: its client is the peer
        if parser.should_upgrade():
            # llhttp stops after this message: a declined upgrade needs a fresh parser.
            self._stopped_by = request
        if request.body == "none":
            request.body_done = True
        if self.handler is not None or self._queued or self._refusal is not None:
            if len(self._queued) >= MAX_PIPELINED:
                raise Refusal(503, "too many pipelined requests\n")
            entry = _Pipelined(request)
            self._queued.append(entry)
            self._feeding = entry
            self._current_body = False
            self._pause("pipeline")
            return
        self._current_body = True
        self._feeding = None
        self._begin(request)

    def on_body(self, body: bytes) -> None:
        self._since_body = 0
        if self._current_body:
            if self.handler is not None:
                self.handler.client_body(body)
        elif self._feeding is not None:
            self._feeding.body.append(body)

    def _in_chunked_body(self) -> bool:
        feeding = self._feeding
        if feeding is not None:
            return feeding.request.body == "chunked" and not feeding.done
        request = self.request
        return (
            self._current_body
            and request is not None
            and request.body == "chunked"
            and not request.body_done
        )

    def on_message_complete(self) -> None:
        if self._current_body:
            request = self.request
            if request is not None and not request.body_done:
                request.body_done = True
                if self.handler is not None:
                    self.handler.client_body_end()
            self._current_body = False  # what comes next belongs to a pipelined request
        elif self._feeding is not None:
            self._feeding.done = True
            self._feeding.request.body_done = True
            self._feeding = None

    # ------------------------------------------------------------------ the handler's side

    def _begin(self, request: ClientRequest) -> None:
        self._state = _BUSY
        self.deadline = 0.0
        self.request = request
        self.handler = None
        self._answered = False  # nothing of the response written yet
        self.server.dispatcher.dispatch(self, request)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and self._state != _CLOSED:
            self._answered = True
            self._written += len(data)
            transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        """Several pieces in one write (a vectored send where the transport can)."""
        transport = self.transport
        if transport is not None and self._state != _CLOSED:
            self._answered = True
            self._written += sum(map(len, parts))
            transport.writelines(parts)

    def write_interim(self, data: bytes) -> None:
        """A 1xx: a final response may still follow."""
        transport = self.transport
        if transport is not None and self._state != _CLOSED:
            self._written += len(data)
            transport.write(data)

    def reply(self, reply: Reply, *, head_only: bool = False) -> None:
        """One of the proxy's own answers, whole, and the request is done."""
        request = self.request
        if request is not None and request.method == "HEAD":
            head_only = True
        keep = (
            request is not None
            and request.keep_alive
            and request.body_done
            and not reply.close
            and not self.stopping
        )
        self.write(reply.encode(keep_alive=keep, head_only=head_only))
        self.finish(keep_alive=keep)

    def finish(self, *, keep_alive: bool) -> None:
        """The response was written whole. The next request may be read, or the connection
        closes (asked for, or the request's body was not all read)."""
        request = self.request
        self.handler = None
        self.request = None
        for reason in ("upstream", "pending", "held", "tunnel"):
            self._resume(reason)  # the exchange that paused for them is over
        if self._state == _CLOSED or self._state == _LINGER:
            return
        if request is not None and not request.body_done:
            self._linger()  # the rest of the body is discarded; the answer is read first
            return
        if not keep_alive or self.stopping or request is None or self._client_eof:
            self._close()
            return
        if self._stopped_by is request:
            self.declined_upgrade()
        if self._queued:
            # Not now: finish() runs inside a parser callback (this connection's or the
            # guest's); the next request starts once that parse is over.
            self._state = _BUSY
            asyncio.get_running_loop().call_soon(self._next)
            return
        if self._refusal is not None:
            self._answer_refusal()
            return
        self._state = _IDLE
        self.deadline = time.monotonic() + self._limits.keepalive_timeout
        self._resume("pipeline")
        rest, self._pending_rest = self._pending_rest, b""
        if rest:
            self._state = _HEAD
            self._feed(rest)

    def _next(self) -> None:
        if self._state in (_CLOSED, _LINGER) or not self._queued or self.handler is not None:
            return
        entry = self._queued.popleft()
        self._current_body = self._feeding is entry
        if self._current_body:
            self._feeding = None
        self._begin(entry.request)
        handler = self.handler
        if handler is not None and self.request is entry.request:
            for chunk in entry.body:
                handler.client_body(chunk)
            entry.body.clear()
            if entry.done and entry.request.body != "none":
                handler.client_body_end()
            if self.handler is handler:
                handler.client_flush()
        if not self._queued and self._refusal is None:
            self._resume("pipeline")

    def pause_reading(self, reason: str = "upstream") -> None:
        self._pause(reason)

    def resume_reading(self, reason: str = "upstream") -> None:
        self._resume(reason)

    def _pause(self, reason: str) -> None:
        if not self._paused_by and self.transport is not None:
            self.transport.pause_reading()
        self._paused_by.add(reason)

    def _resume(self, reason: str) -> None:
        paused = self._paused_by
        if reason in paused:
            paused.discard(reason)
            if not paused and self.transport is not None and self._state != _CLOSED:
                self.transport.resume_reading()

    def start_tunnel(self) -> bytes:
        """After a 101: bytes now pass to the handler as they come. Returns what the client
        sent after its head, already."""
        self._state = _TUNNEL
        self.deadline = 0.0
        rest, self._upgrade_rest = self._upgrade_rest, b""
        self._queued.clear()
        self._resume("upgrade")
        return rest

    def declined_upgrade(self) -> None:
        """The guest answered an upgrade with a plain response: HTTP goes on, with a fresh
        parser (llhttp stopped after the upgrade head) fed what came after it."""
        rest, self._upgrade_rest = self._upgrade_rest, b""
        self._parser = httptools.HttpRequestParser(self)
        self._stopped_by = None
        self._pending_rest = rest
        self._resume("upgrade")

    def abort(self) -> None:
        """Cut the connection: a response whose head went out cannot be ended cleanly."""
        self._state = _CLOSED
        if self.transport is not None:
            self.transport.abort()

    def close_soon(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._state == _CLOSED:
            return
        self._state = _CLOSED
        if self.transport is not None:
            # close() waits for the unsent answer; a client that never takes it is reaped
            # by the sweep (check()), or it would hold its descriptor for good.
            self._write_paused_at, self._write_mark = time.monotonic(), self._taken()
            self.transport.close()

    # ------------------------------------------------------------------ refusals and time

    def _refuse(self, refusal: Refusal, why: str | None = None) -> None:
        self._in_head = False
        self._refusal_why = why
        feeding = self._feeding
        if feeding is not None and not feeding.done:
            # A pipelined request whose body broke: it is the refused one, not to be begun.
            self._queued.remove(feeding)
            self._feeding = None
        request = self.request
        if request is not None and not request.body_done:
            # The body of the request being answered cannot be framed (a bad chunk) or
            # stopped arriving: the guest must not get the rest of it, and the client learns
            # why if it can.
            handler, self.handler = self.handler, None
            self.request = None
            if handler is not None:
                handler.client_lost()
            if self._answered:
                self.abort()
                return
        if self.handler is not None:
            # A pipelined request was bad; answer it in its turn, reading nothing more.
            self._refusal = refusal
            self._pause("refusal")
            return
        self._refusal = refusal
        self._answer_refusal()

    def _answer_refusal(self) -> None:
        refusal, self._refusal = self._refusal, None
        assert refusal is not None
        why, self._refusal_why = self._refusal_why, None
        self.server.reject_log(self.peer or "unknown", why or refusal.text.strip())
        reply = text_reply(refusal.status, refusal.text, headers=refusal.headers, close=True)
        self.write(reply.encode(keep_alive=False))
        self._linger()

    def _linger(self) -> None:
        now = time.monotonic()
        self._state = _LINGER
        self.deadline = now + LINGER_S
        self._quiet_until = now + LINGER_QUIET_S
        self._paused_by.clear()
        if self.transport is not None:
            self.transport.resume_reading()

    def check(self, now: float) -> None:
        """The sweep: close a connection past its deadline."""
        state = self._state
        if state == _CLOSED:
            if self._stalled_writer(now):
                self.abort()
            return
        if state == _LINGER:
            if now >= self.deadline or now >= self._quiet_until:
                self._close()
            return
        if state in (_BUSY, _TUNNEL) and self.writing_paused:
            # A client that takes nothing of its answer holds a guest connection and keeps the
            # guest awake.
            if self._stalled_writer(now):
                self.server.reject_log(self.peer or "unknown", "stopped reading its answer")
                self.abort()
            return
        if state == _BUSY:
            if self.handler is None and not self._queued:
                self._close()  # a safeguard: nothing will ever answer on this connection
                return
            self._check_body(now)
            return
        deadline = self.deadline
        if not deadline or now < deadline:
            return
        if state == _HEAD and self.handler is None:
            self.server.reject_log(self.peer or "unknown", "request head not received in time")
            self.server.header_timeouts += 1
            self._close()
        elif state == _IDLE:
            self._close()

    def _check_body(self, now: float) -> None:
        """A request body that stopped arriving, while nothing holds the client back: the
        guest may not even have been asked yet (a chunked body's first stretch is read
        whole), so this sweep is its only clock."""
        request = self.request
        if (
            request is None
            or request.body_done
            or self._paused_by
            or now - self._last_read < self._limits.read_timeout
        ):
            return
        self._refuse(Refusal(408, "the request body stopped arriving\n"), "request body stalled")

    def stop(self) -> None:
        """The daemon is stopping: idle connections close now, busy ones after their answer."""
        self.stopping = True
        if self.handler is None:
            self._close()
        else:
            self.handler.stop()


class ProxyServer:
    """What every connection of one listener shares, and the sweep that enforces time."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        limits: Limits,
        *,
        scheme: str = "http",
        reject_log: RejectionLog | None = None,
        relay: RelayCheck | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.limits = limits
        self.scheme = scheme
        # The daemon's relay listener (proxy/relay.py): requests from workers only.
        self.relay = relay
        self.reject_log = reject_log or RejectionLog("proxy")
        self.connections: set[ClientConnection] = set()
        self.header_timeouts = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._empty: asyncio.Event | None = None
        self._stopping = False

    def protocol(self) -> ClientConnection:
        if self._sweeper is None:
            self._schedule()
        return ClientConnection(self)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        if not self.connections:
            return  # the next connection starts it again
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check(now)
        self._schedule()

    def closed_one(self) -> None:
        if not self.connections and self._empty is not None:
            self._empty.set()

    def stop(self) -> None:
        """Stop: idle connections close, answers in flight finish, endless streams end."""
        self._stopping = True
        for conn in list(self.connections):
            conn.stop()

    async def drain(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the open connections to finish, then cut the rest."""
        self.stop()
        if self.connections:
            self._empty = asyncio.Event()
            try:
                async with asyncio.timeout(grace_s):
                    await self._empty.wait()
            except TimeoutError:
                log.warning(
                    "%d proxy connection(s) still open after %gs: closed",
                    len(self.connections),
                    grace_s,
                )
                for conn in list(self.connections):
                    conn.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
