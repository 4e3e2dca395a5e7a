"""A guest that records exactly the bytes each connection brings, and a strict reader of them.

`RawUpstream` is an asyncio TCP server on 127.0.0.1. It keeps every byte each accepted
connection receives, per connection and in order, and answers every request it can frame
(httptools, only to know when a request ends) with the next scripted reply, or `OK_REPLY`.
It never closes a connection on its own, so a proxy that reused a connection it should have
dropped would be seen doing it.

`parse_requests` reads recorded bytes as strictly as a guest should have to: one or more whole
requests, each framed one way only, nothing left over. Tests assert on what it returns.

Use it through `recording_upstream()` in a fixture of the test module:

    @pytest.fixture
    async def upstream() -> AsyncIterator[RawUpstream]:
        async with recording_upstream() as up:
            yield up
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import httptools

HOST = "127.0.0.1"

OK_BODY = b"ok"
OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Raw-Upstream: 1\r\n\r\n" + OK_BODY
# The head alone: what a HEAD request gets (the same Content-Length, no body).
OK_HEAD_REPLY = OK_REPLY[: -len(OK_BODY)]
# A 101 to a request that asked for no upgrade; the proxy must answer 502 instead.
SWITCHING_REPLY = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\n"
)


class MalformedRecording(AssertionError):
    """What an upstream received is not a sequence of well-formed requests."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    chunked: bool  # framed by Transfer-Encoding: chunked (else by Content-Length or nothing)

    def values(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for n, v in self.headers if n.lower() == lower]

    def value(self, name: str) -> str | None:
        """The one value of a header, None when absent; more than one is an error."""
        found = self.values(name)
        if len(found) > 1:
            raise MalformedRecording(f"{len(found)} {name} headers: {found}")
        return found[0] if found else None


class _RequestCollector:
    """httptools callbacks gathering requests; `partial` while one has begun but not ended."""

    def __init__(self) -> None:
        self.done: list[RecordedRequest] = []
        self.partial = False
        self._url = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()
        self._parser: httptools.HttpRequestParser | None = None

    def bind(self, parser: httptools.HttpRequestParser) -> None:
        self._parser = parser

    def on_message_begin(self) -> None:
        self.partial = True
        self._url.clear()
        self._headers = []
        self._body.clear()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        headers = tuple(self._headers)
        chunked = any(n.lower() == "transfer-encoding" for n, _ in headers)
        self.done.append(
            RecordedRequest(
                method=parser.get_method().decode("latin-1"),
                target=self._url.decode("latin-1"),
                version=parser.get_http_version(),
                headers=headers,
                body=bytes(self._body),
                chunked=chunked,
            )
        )
        self.partial = False


def parse_requests(data: bytes) -> list[RecordedRequest]:
    """Every request in `data`, or MalformedRecording: llhttp's strict parse, and on top of it
    what llhttp lets through but a guest must not be asked to judge (several Host headers,
    Transfer-Encoding other than one `chunked`, Transfer-Encoding in HTTP/1.0), and nothing
    left over at the end."""
    collector = _RequestCollector()
    view = memoryview(data)
    while view:
        parser = httptools.HttpRequestParser(collector)
        collector.bind(parser)
        try:
            parser.feed_data(view)
            break
        except httptools.HttpParserUpgrade as exc:
            # An Upgrade head the guest did not switch on (it answers 200): HTTP goes on.
            offset = int(exc.args[0]) if exc.args else len(view)
            view = view[offset:]
        except httptools.HttpParserError as exc:
            raise MalformedRecording(f"not HTTP/1.1 ({exc}): {data!r}") from None
    if collector.partial:
        raise MalformedRecording(f"an incomplete request at the end: {data!r}")
    for request in collector.done:
        _check_framing(request, data)
    return collector.done


def _check_framing(request: RecordedRequest, data: bytes) -> None:
    hosts = request.values("Host")
    codings = request.values("Transfer-Encoding")
    lengths = request.values("Content-Length")
    if len(hosts) != 1:
        raise MalformedRecording(f"{len(hosts)} Host headers: {data!r}")
    if codings and (codings != ["chunked"] or request.version != "1.1"):
        raise MalformedRecording(f"Transfer-Encoding {codings} in HTTP/{request.version}")
    if lengths and (len(lengths) != 1 or not lengths[0].isdigit()):
        raise MalformedRecording(f"Content-Length {lengths}")
    if lengths and int(lengths[0]) != len(request.body):
        raise MalformedRecording(f"Content-Length {lengths[0]} for {len(request.body)} bytes")


@dataclass
class RecordedConnection:
    data: bytearray = field(default_factory=bytearray)
    answered: int = 0  # requests answered on it
    closed: bool = False  # the proxy closed it (or it broke)
    error: str | None = None  # what the guest's own parser said, if it gave up

    def requests(self) -> list[RecordedRequest]:
        return parse_requests(bytes(self.data))


class _Recorder(asyncio.Protocol):
    def __init__(self, upstream: RawUpstream) -> None:
        self._upstream = upstream
        self._record = RecordedConnection()
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._method = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._upstream.connections.append(self._record)
        self._upstream.transports.add(self._transport)

    def data_received(self, data: bytes) -> None:
        self._record.data += data
        view = memoryview(data)
        while self._parser is not None and view:
            try:
                self._parser.feed_data(view)
                return
            except httptools.HttpParserUpgrade as exc:
                offset = int(exc.args[0]) if exc.args else len(view)
                view = view[offset:]
                self._parser = httptools.HttpRequestParser(self)
            except httptools.HttpParserError as exc:
                # Keep recording (the test reads what came); answer nothing more.
                self._record.error = str(exc)
                self._parser = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._record.closed = True
        if self._transport is not None:
            self._upstream.transports.discard(self._transport)

    # httptools callbacks: only to know where a request ends, and whether it was a HEAD.
    def on_headers_complete(self) -> None:
        if self._parser is not None:
            self._method = self._parser.get_method()

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._record.answered += 1
        script = self._upstream.replies
        reply = script.popleft() if script else None
        if reply is None:
            reply = OK_HEAD_REPLY if self._method == b"HEAD" else OK_REPLY
        transport.write(reply)


class RawUpstream:
    def __init__(self) -> None:
        self.connections: list[RecordedConnection] = []
        # Replies for the next requests, in order (any connection); then OK_REPLY.
        self.replies: deque[bytes] = deque()
        self.port = 0
        self.transports: set[asyncio.Transport] = set()  # the open ones
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Recorder(self), HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for transport in list(self.transports):
                transport.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def received(self) -> bytes:
        """Everything every connection received, joined: for assertions that a text never
        reached the guest."""
        return b"".join(bytes(c.data) for c in self.connections)

    def requests(self) -> list[RecordedRequest]:
        """Every connection's requests, connection by connection (MalformedRecording if any
        connection's bytes are not whole, well-formed requests)."""
        return [r for c in self.connections for r in c.requests()]


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()
