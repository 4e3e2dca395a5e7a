"""One plain-HTTP/1.1 connection to a guest, its responses parsed by httptools (llhttp).

The fast path's upstream side (pxproxy/proxy/fastpath.py pools these): one `asyncio.Protocol`
per connection, httptools callbacks filling the head of the current response, and its body in
a `ResponseBody` whose bounded buffer pauses reading from the guest while the client is slow,
so a download is never held in memory. A connection is reusable only once its response was
framed (Content-Length, chunked, or none by rule), read to its end, and kept alive by the
guest; a close-delimited body, a guest's `Connection: close`, stray bytes or any error end it.

The exceptions raised are aiohttp's public ones, so the proxy handles them as it handles its
session's: ServerDisconnectedError / ClientOSError when the connection closed before the
response head (safe to retry once), SocketTimeoutError (a TimeoutError) when the guest sent
nothing for the read timeout, ClientResponseError for a malformed response, ClientPayloadError
for a body cut short.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Final, cast

import aiohttp
import httptools
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# Reading from the guest pauses when this much body is unread, and resumes once the client
# took it. One read of the socket may add up to asyncio's read size (256 KiB) on top.
BODY_HIGH_WATER_BYTES: Final = 128 * 1024
# A response head (status line and headers) larger than this is refused as malformed.
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 128

_HEAD, _BODY, _DONE, _IDLE = range(4)  # the state of the connection's exchange


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    headers: CIMultiDictProxy[str]


class _HeadTooLarge(Exception):
    pass


class ResponseBody:
    """The unread body of one response: `readany()` returns what arrived (b"" at its end)."""

    __slots__ = ("_chunks", "_done", "_error", "_peak", "_proto", "_size", "_waiter")

    def __init__(self, proto: UpstreamProtocol) -> None:
        self._proto = proto
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._peak = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received from the guest and not yet read."""
        return self._size

    @property
    def peak_buffered(self) -> int:
        return self._peak

    @property
    def complete(self) -> bool:
        """The whole body arrived (it may not all have been read yet)."""
        return self._done

    async def readany(self) -> bytes:
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._size = 0
                self._proto.body_drained()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            await self._wait()

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    async def _wait(self) -> None:
        waiter = self._waiter = self._proto.loop.create_future()
        try:
            await self._proto.wait_for_guest(waiter)
        finally:
            self._waiter = None

    # ------------------------------------------------------------------ fed by the protocol

    def feed(self, data: bytes) -> int:
        self._chunks.append(data)
        size = self._size = self._size + len(data)
        if size > self._peak:
            self._peak = size
        self._wake()
        return size

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if self._error is None and not self._done:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class UpstreamProtocol(asyncio.Protocol):
    """A keep-alive connection to a guest: `send()` a request head, `await read_head()`, then
    read `body` to its end before the next `send()`."""

    def __init__(self, origin: str, read_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._origin = origin  # "http://host:port", for error messages
        self._read_timeout = read_timeout
        self._transport: asyncio.Transport | None = None
        self._lost = False
        self._paused = False
        self._state = _IDLE
        self._parser: httptools.HttpResponseParser | None = None
        self._skip_payload = False
        self._request_line = b""
        self._reason = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._keep_alive = False
        self._framed = False
        self._head: ResponseHead | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.body = ResponseBody(self)

    # ------------------------------------------------------------------ the exchange

    @property
    def reusable(self) -> bool:
        """The last response was read to its end and the guest keeps the connection open."""
        return (
            self._state == _DONE
            and self._keep_alive
            and not self._lost
            and not self._paused
            and self.body.buffered == 0
            and self._transport is not None
            and not self._transport.is_closing()
        )

    @property
    def open(self) -> bool:
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def send(self, head: bytes, *, skip_payload: bool) -> None:
        """Write a request head; its response is for `read_head()` and `body`."""
        transport = self._transport
        if self._lost or transport is None or transport.is_closing():
            raise aiohttp.ServerDisconnectedError()
        self._state = _HEAD
        self._parser = httptools.HttpResponseParser(self)
        self._skip_payload = skip_payload
        self._request_line = head[: head.find(b"\r\n")]
        self._reason.clear()
        self._fields = []
        self._head_bytes = 0
        self._keep_alive = False
        self._framed = False
        self._head = None
        self._error = None
        self.body = ResponseBody(self)
        transport.write(head)

    async def read_head(self) -> ResponseHead:
        """The final response's head (1xx interim responses are skipped, but 101 ends it)."""
        while True:
            if self._head is not None:
                return self._head
            if self._error is not None:
                raise self._error
            waiter = self._waiter = self.loop.create_future()
            try:
                await self.wait_for_guest(waiter)
            finally:
                self._waiter = None

    def release(self) -> None:
        """Back in the pool: the next `send()` starts a new exchange."""
        self._state = _IDLE
        self._parser = None

    def close(self) -> None:
        self._keep_alive = False
        if self._transport is not None:
            self._transport.close()

    async def wait_for_guest(self, waiter: asyncio.Future[None]) -> None:
        """Wait for `waiter`, which the next bytes from the guest resolve; the read timeout
        counts only while something waits, so a paused download is not the guest's fault."""
        timer = self.loop.call_later(self._read_timeout, self._read_timed_out)
        try:
            await waiter
        finally:
            timer.cancel()

    def body_drained(self) -> None:
        if self._paused and self.body.buffered < BODY_HIGH_WATER_BYTES:
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, but they have the same methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        state = self._state
        parser = self._parser
        if parser is None or state == _IDLE or (state == _DONE and not self._skip_payload):
            # Bytes nobody asked for: the framing is lost, the connection cannot be reused.
            self.close()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101: its head ended the exchange, what follows is another protocol
        except httptools.HttpParserError as exc:
            cause = exc.__context__ if isinstance(exc.__context__, _HeadTooLarge) else exc
            self._fail(self._malformed(str(cause) or type(cause).__name__), cause)
            return
        if self._state == _HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(self._malformed(f"response head over {MAX_HEAD_BYTES} bytes"))
                return
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost() says what that meant

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._keep_alive = False
        state = self._state
        if state == _HEAD:
            error: aiohttp.ClientError
            if exc is None:
                error = aiohttp.ServerDisconnectedError()
            else:
                error = aiohttp.ClientOSError(getattr(exc, "errno", None), str(exc))
            self._fail(error, exc)
        elif state == _BODY:
            if exc is None and not self._framed:
                self.body.finish()  # a body delimited by the close: this was its end
                self._state = _DONE
            else:
                self._fail(aiohttp.ClientPayloadError("Response payload is not completed"), exc)
        self._wake()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self._state != _HEAD:
            self._keep_alive = False  # a second response to one request
            raise httptools.HttpParserError("unexpected response")

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        if len(fields) >= MAX_HEADERS:
            raise _HeadTooLarge(f"more than {MAX_HEADERS} response headers")
        fields.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._reason.clear()  # an interim response (100, 103): the final one follows
            self._fields = []
            return
        headers = CIMultiDictProxy(CIMultiDict(self._fields))
        self._head = ResponseHead(status, self._reason.decode("utf-8", "surrogateescape"), headers)
        self._keep_alive = status != 101 and parser.should_keep_alive()
        if self._skip_payload or status in (101, 204, 304):
            self._state = _DONE
            self.body.finish()
            return
        self._state = _BODY
        self._framed = "Content-Length" in headers or _chunked(headers)

    def on_body(self, body: bytes) -> None:
        if self._state != _BODY:
            self._keep_alive = False  # a body where none belongs (a HEAD's): not reusable
            return
        if self.body.feed(body) >= BODY_HIGH_WATER_BYTES and not self._paused:
            self._paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._state == _BODY:
            self._state = _DONE
            self.body.finish()

    # ------------------------------------------------------------------ failures

    def _read_timed_out(self) -> None:
        self._fail(aiohttp.SocketTimeoutError(f"the guest sent nothing for {self._read_timeout}s"))

    def _fail(self, error: BaseException, cause: BaseException | None = None) -> None:
        """The exchange cannot go on: the reader gets `error`, the connection closes."""
        if cause is not None:
            error.__cause__ = cause
        if self._state == _HEAD and self._error is None:
            self._error = error
        elif self._state == _BODY:
            self.body.fail(error)
        self.close()
        self._wake()

    def _malformed(self, message: str) -> aiohttp.ClientResponseError:
        method, _, target = self._request_line.decode("latin-1").partition(" ")
        url = URL(self._origin + target.rsplit(" ", 1)[0], encoded=True)
        info = aiohttp.RequestInfo(url, method, CIMultiDictProxy(CIMultiDict()), url)
        return aiohttp.ClientResponseError(info, (), message=f"malformed response: {message}")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _chunked(headers: CIMultiDictProxy[str]) -> bool:
    coding = headers.get("Transfer-Encoding")
    return coding is not None and coding.rsplit(",", 1)[-1].strip().lower() == "chunked"
