"""One HTTP/1.1 connection to a guest: an `asyncio.Protocol` whose responses httptools (llhttp)
parses, delivered by callback to the exchange that owns the connection for one request.

Nothing awaits here. The exchange writes the request, and the connection calls it back with
the response head, each piece of body and the end. The flow control is the transports' own:
the exchange pauses reading here while the client is slow, and hears when this side's write
buffer fills while a request body streams up. A connection is reusable only once its response
was framed (Content-Length, chunked, or none by rule), read to its end, and kept alive by the
guest. A close-delimited body, the guest's `Connection: close`, stray bytes or any error end it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, cast, runtime_checkable

import httptools

if TYPE_CHECKING:
    from .pool import PoolKey

# A response head (status line and headers) larger than this is refused as malformed.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 128

# What an exchange is at: no exchange (pooled), waiting for the head, reading the body.
_IDLE, _HEAD, _BODY, _DONE = range(4)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A guest's final response head, its framing already checked."""

    status: int
    reason: str
    fields: list[tuple[str, str]]
    # "length" (Content-Length), "chunked", "close" (delimited by the close), "none" (no body:
    # HEAD, 1xx, 204, 304).
    framing: str
    length: int | None


class UpstreamFailure(Exception):
    """The guest failed the exchange. `kind`:
    - "connect": refused or unreachable; "connect-timeout": no connection in time;
    - "closed": the connection closed before any of the response (a pooled connection the
      guest had dropped: safe to retry once when nothing of a body was sent);
    - "timeout": nothing from the guest for the read timeout;
    - "malformed": a response that cannot be framed one way only;
    - "broken": the connection ended inside the response."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ResponseSink(Protocol):
    """The exchange's side of the connection's callbacks."""

    def response_head(self, head: ResponseHead) -> None: ...

    def response_body(self, data: bytes) -> None: ...

    def response_end(self) -> None: ...

    def tunnel_data(self, data: bytes) -> None:
        """Bytes after a 101's head: the first of the upgraded protocol."""

    def upstream_failed(self, failure: UpstreamFailure) -> None: ...

    def upstream_flush(self) -> None:
        """One read from the guest was handled: write out what it produced."""

    def upstream_writable(self, writable: bool) -> None:
        """This side's write buffer filled (False) or drained (True)."""


@runtime_checkable
class ContinueSink(Protocol):
    """A sink that passes an upstream's 100 Continue on (a worker's relayed exchange)."""

    def response_continue(self) -> None: ...


class _Stop(Exception):
    """Raised in a parser callback to stop parsing; the reason was recorded first."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(
        self,
        key: PoolKey,
        read_timeout: float,
        on_lost: Callable[[UpstreamConnection], None],
    ) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._read_timeout = read_timeout
        self._on_lost = on_lost
        self._sink: ResponseSink | None = None
        self._state = _IDLE
        self._parser: httptools.HttpResponseParser | None = None
        self._head_request = False
        self._upgrade_asked = False
        self._received = False  # any byte of the current response
        self._head_bytes = 0
        self._reason = ""
        self._fields: list[tuple[str, str]] = []
        self._keep_alive = False
        self._framing = "none"
        self._interim = False  # inside a 1xx interim response
        self._body_pending = False  # the request body is still coming from the client
        self._write_blocked = False  # the guest takes no more of it for now
        self._in_feed = False
        self._reusable = False
        self._lost = False
        self._paused = False  # reading paused by the exchange (the client is slow)
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.tunnel = False  # after a 101: bytes pass to the sink as they come

    # ------------------------------------------------------------------ the exchange's side

    @property
    def usable(self) -> bool:
        """Fit for another request: idle, open, and the last response left it reusable."""
        transport = self.transport
        return (
            self._state == _IDLE
            and self._reusable
            and not self._lost
            and transport is not None
            and not transport.is_closing()
        )

    @property
    def takeable(self) -> bool:
        """Usable, and not inside a parse of its own: bytes may follow what ended the last
        response in the same read, and must meet this connection idle (and close it)."""
        return self.usable and not self._in_feed

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def start(
        self,
        sink: ResponseSink,
        data: bytes,
        *,
        head_request: bool,
        upgrade: bool,
        body_pending: bool = False,
    ) -> None:
        """Send a request (its head, and what of its body is at hand); the response goes to
        `sink`. The read timeout runs from now, or, while the body is still coming from the
        client (`body_pending`), from `body_sent()` or the guest not taking more of it: a
        client that stalls its upload is the client's timeout, not the guest's."""
        self._sink = sink
        self._state = _HEAD
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = head_request
        self._upgrade_asked = upgrade
        self._received = False
        self._head_bytes = 0
        self._fields = []
        self._reusable = False
        self._last_read = self.loop.time()
        self._body_pending = body_pending
        self._write_blocked = False
        if not body_pending:
            self._arm_timer(self._read_timeout)
        transport = self.transport
        assert transport is not None
        transport.write(data)

    def body_sent(self) -> None:
        """The whole request is out: from now the guest owes an answer."""
        self._body_pending = False
        self._start_clock()

    def _start_clock(self) -> None:
        if self._timer is None and self._state in (_HEAD, _BODY):
            self._last_read = self.loop.time()
            self._arm_timer(self._read_timeout)

    def handover(self, sink: ResponseSink) -> None:
        """A new owner for the callbacks (the tunnel, after a 101)."""
        self._sink = sink

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._lost:
            # Body bytes still going up: the guest is not late with its answer yet.
            self._last_read = self.loop.time()
            transport.write(data)

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not self._lost and transport.can_write_eof():
            transport.write_eof()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_read = self.loop.time()  # a paused download is not the guest's delay
            self.transport.resume_reading()

    def detach(self) -> None:
        """The exchange is done with this connection; back to idle (for the pool)."""
        self._sink = None
        self._state = _IDLE
        self._parser = None
        self.resume()

    def close(self) -> None:
        self._reusable = False
        self._sink = None
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, but they have the same methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        sink = self._sink
        if self.tunnel and sink is not None:
            sink.tunnel_data(data)
            sink.upstream_flush()
            return
        if sink is None or self._state == _IDLE or self._state == _DONE:
            # Bytes nobody asked for: the framing is lost, the connection cannot be reused.
            self.close()
            return
        self._last_read = self.loop.time()
        self._received = True
        parser = self._parser
        assert parser is not None
        self._in_feed = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._state == _DONE and self.tunnel:
                rest = data[exc.args[0] :] if exc.args else b""
                # The tunnel took the callbacks over at the 101.
                sink = self._sink or sink
                if rest:
                    sink.tunnel_data(rest)
        except _Stop:
            pass
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                self._fail("malformed", f"malformed response: {exc}")
        except httptools.HttpParserError as exc:
            self._fail("malformed", f"malformed response: {exc}")
        else:
            if self._state == _HEAD:
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    self._fail("malformed", f"response head over {MAX_HEAD_BYTES} bytes")
        self._in_feed = False
        (self._sink or sink).upstream_flush()

    def eof_received(self) -> bool | None:
        if self.tunnel and self._sink is not None:
            self._sink.tunnel_data(b"")  # half-close: the client's side gets our EOF
            return True
        return None  # the transport closes; connection_lost() says what that meant

    def pause_writing(self) -> None:
        # The guest takes no more of the body: from here its silence is its own.
        self._write_blocked = True
        self._start_clock()
        if self._sink is not None:
            self._sink.upstream_writable(False)

    def resume_writing(self) -> None:
        # It takes the body in again: while the body is still coming, a silence is the
        # client's (server.py times that), not the guest's.
        self._write_blocked = False
        self._last_read = self.loop.time()
        if self._sink is not None:
            self._sink.upstream_writable(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._reusable = False
        self._cancel_timer()
        sink, state = self._sink, self._state
        self._sink = None
        self._on_lost(self)
        if sink is None:
            return
        if self.tunnel:
            sink.tunnel_data(b"")
            sink.upstream_failed(UpstreamFailure("closed", "the guest closed the connection"))
        elif state == _HEAD:
            if self._received:
                sink.upstream_failed(UpstreamFailure("broken", "the guest closed mid-head"))
            else:
                cause = f": {exc}" if exc else ""
                sink.upstream_failed(UpstreamFailure("closed", f"connection closed{cause}"))
        elif state == _BODY:
            if exc is None and self._framing == "close":
                self._state = _DONE
                sink.response_end()  # a body delimited by the close: this was its end
            else:
                sink.upstream_failed(UpstreamFailure("broken", "the guest broke off the body"))
        sink.upstream_flush()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._state != _HEAD:
            self._fail("malformed", "a second response to one request")
            raise _Stop

    def on_status(self, status: bytes) -> None:
        self._reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        if len(fields) >= MAX_HEADERS:
            self._fail("malformed", f"more than {MAX_HEADERS} response headers")
            raise _Stop
        fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        sink = self._sink
        assert parser is not None
        assert sink is not None
        status = parser.get_status_code()
        if status < 100:
            self._fail("malformed", f"malformed response: status {status}")
            raise _Stop
        if 100 <= status < 200 and status != 101:
            self._fields = []  # an interim response (100, 103): the final one follows
            self._interim = True
            if status == 100 and isinstance(sink, ContinueSink):
                sink.response_continue()
            return
        self._interim = False
        framing, length, problem = _framing(self._fields, status, self._head_request)
        if problem is not None:
            self._fail("malformed", f"malformed response: {problem}")
            raise _Stop
        if status == 101:
            if not self._upgrade_asked:
                self._fail("malformed", "101 Switching Protocols to a request without Upgrade")
                raise _Stop
            self.tunnel = True
        self._framing = framing
        self._keep_alive = status != 101 and parser.should_keep_alive()
        head = ResponseHead(status, self._reason, self._fields, framing, length)
        if framing == "none":
            self._state = _DONE
            # A HEAD's response announces a body the parser would wait for: parsing stops at
            # the head, and the next exchange gets a new parser. Bytes a guest sent after it
            # anyway reach an idle connection, which then closes.
            self._reusable = self._keep_alive
            sink.response_head(head)
            if self._sink is not None and not self.tunnel:
                sink.response_end()
            if self._head_request:
                raise _Stop
            return
        self._state = _BODY
        sink.response_head(head)

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None and self._state == _BODY:
            sink.response_body(body)

    def on_message_complete(self) -> None:
        if self._state == _HEAD and self._interim:
            self._interim = False
            return
        if self._state != _BODY:
            return
        self._state = _DONE
        self._reusable = self._keep_alive and self._framing != "close"
        sink = self._sink
        if sink is not None:
            sink.response_end()

    # ------------------------------------------------------------------ failures and time

    def _arm_timer(self, delay: float) -> None:
        # A timer still pending from an earlier exchange serves this one too: when it fires it
        # measures from `_last_read`, and re-arms for what is left. So a kept-alive connection
        # costs a timer per read_timeout, not one per request.
        if self._timer is None:
            self._timer = self.loop.call_later(delay, self._check_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        # One timer per exchange, pushed back by reads, rather than one per read.
        self._timer = None
        if self._state not in (_HEAD, _BODY) or self.tunnel:
            return
        if self._paused or (self._body_pending and not self._write_blocked):
            self._arm_timer(self._read_timeout)
            return
        quiet = self.loop.time() - self._last_read
        if quiet < self._read_timeout:
            self._arm_timer(self._read_timeout - quiet)
            return
        self._fail("timeout", f"the guest sent nothing for {self._read_timeout:g}s")

    def _fail(self, kind: str, message: str) -> None:
        """The exchange cannot go on: the sink hears why, the connection closes."""
        sink = self._sink
        self._sink = None
        self._state = _DONE
        self.close()
        if sink is not None:
            sink.upstream_failed(UpstreamFailure(kind, message))


def _framing(
    fields: list[tuple[str, str]], status: int, head_request: bool
) -> tuple[str, int | None, str | None]:
    """(framing, length, problem): how the body is delimited (RFC 9112 §6.3), and what makes
    it ambiguous. llhttp refuses most ambiguities itself; this is the second lock."""
    lengths: list[str] = []
    codings: list[str] = []
    for name, value in fields:
        lower = name.lower()
        if lower == "content-length":
            lengths.append(value.strip())
        elif lower == "transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(","))
    if lengths and codings:
        return "none", None, "both Content-Length and Transfer-Encoding"
    length: int | None = None
    if lengths:
        if len(set(lengths)) != 1 or not all(v.isdigit() and v.isascii() for v in lengths):
            return "none", None, "conflicting or invalid Content-Length"
        length = int(lengths[0])
    if head_request or status in (101, 204, 304):
        return "none", length, None
    if codings:
        # Only chunked is relayed: the client would get a body in a coding it was not told of.
        if codings != ["chunked"]:
            return "none", None, "a transfer coding other than chunked"
        return "chunked", None, None
    if length is not None:
        return "length", length, None
    return "close", None, None
