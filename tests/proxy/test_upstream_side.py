"""The guest side of the data path (upstream_conn.py, pool.py): keep-alive reuse only when it
is safe, HTTP/1.1 framing corner cases, backpressure and timeouts, through the proxy and on
the pool itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from pxproxy.proxy import pool as pool_module
from pxproxy.proxy.pool import MAX_IDLE_PER_GUEST, PoolKey, UpstreamPool
from pxproxy.proxy.upstream_conn import ResponseHead, UpstreamConnection, UpstreamFailure

from ..support import wait_for
from .conftest import HOST, RunningProxy, StartProxy, routes, snapshot_guest

Reply = Callable[[bytes], bytes | None]  # request head -> raw response (None: close)


BIG_BYTES = 50 * 1024 * 1024
BIG_BODY = b"x" * BIG_BYTES
CHUNKED_PIECES = 50  # /chunked-big: this many chunks of 4 KiB
# asyncio's selector transport reads at most this much per data_received (max_size).
ASYNCIO_READ_BYTES = 256 * 1024


@dataclass
class RawUpstream:
    port: int
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def unsent(self) -> int:
        """Bytes the guest wrote that are still in its own buffer: not taken by the proxy."""
        return sum(w.transport.get_write_buffer_size() for w in self.writers)


def _replies(head: bytes) -> bytes | None:
    target = head.split(b" ", 2)[1]
    method = head.split(b" ", 1)[0]
    body = b"hello " + target
    if target == b"/close":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbye!\n"
    if target == b"/chunked":
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
    if target == b"/eof":
        return b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    if target == b"/204":
        return b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    if target == b"/304":
        return b"HTTP/1.1 304 Not Modified\r\nETag: x\r\nContent-Length: 9\r\n\r\n"
    if target == b"/early":
        return (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate\n"
        )
    if target == b"/garbage":
        return b"NOT HTTP AT ALL\r\n\r\n"
    if target == b"/hop":
        return (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-private\r\n"
            b"X-Private: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"\r\nok"
        )
    if target == b"/drop":
        return None
    if target == b"/silent":
        return b""  # and keeps the connection open: the read timeout must end it
    if target == b"/stall":
        return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
    if target == b"/big":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_BYTES + BIG_BODY
    if target == b"/chunked-big":
        chunk = b"1000\r\n" + b"c" * 4096 + b"\r\n"
        trailer = b"0\r\nX-Trailer: 1\r\n\r\n"
        return (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * CHUNKED_PIECES
            + trailer
        )
    if target == b"/badstatus":
        return b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n"
    if target == b"/many-headers":
        return b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 200 + b"Content-Length: 0\r\n\r\n"
    if target == b"/http10":
        return b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n10"
    if target == b"/interim":
        return (
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
    if target == b"/switch":
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\n"
    length = b"Content-Length: %d\r\n" % len(body)
    return b"HTTP/1.1 200 OK\r\n" + length + b"\r\n" + (b"" if method == b"HEAD" else body)


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    state = RawUpstream(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                state.heads.append(head)
                reply = _replies(head)
                if reply is None:
                    break
                writer.write(reply)
                if b"/silent" in head or b"/stall" in head:
                    await reader.read()  # until the proxy gives up and closes
                    break
                await writer.drain()
                if b"Connection: close" in reply or b"until" in reply or b"/stale" in head:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def _proxy(start_proxy: StartProxy, up: RawUpstream, **config: Any) -> RunningProxy:
    return await start_proxy(
        routes({"host": "raw.test", "guest": "raw", "port": up.port}),
        [snapshot_guest(120, "raw", (HOST,))],
        **config,
    )


async def _get(
    client: aiohttp.ClientSession, url: str, method: str = "GET"
) -> tuple[int, CIMultiDict[str], bytes]:
    async with client.request(method, url, headers={"Host": "raw.test"}) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_keep_alive_reused_only_when_safe(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    px = await _proxy(start_proxy, raw_upstream)
    url = px.url
    for path in ("/a", "/b", "/204", "/304", "/early", "/chunked"):
        await _get(client, url + path)
    await _get(client, url + "/a", "HEAD")
    assert raw_upstream.connections == 1  # all framed responses: one connection throughout
    assert (await _get(client, url + "/close"))[2] == b"bye!\n"
    await _get(client, url + "/a")
    assert raw_upstream.connections == 2  # Connection: close was honoured
    assert (await _get(client, url + "/eof"))[2] == b"until the end"
    await _get(client, url + "/a")
    assert raw_upstream.connections == 3  # a body delimited by the close is never reused


async def test_framing_semantics(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream)).url
    status, headers, body = await _get(client, url + "/x?y=1")
    assert (status, body) == (200, b"hello /x?y=1")
    status, headers, body = await _get(client, url + "/x", "HEAD")
    assert (status, headers["Content-Length"], body) == (200, "8", b"")
    status, headers, body = await _get(client, url + "/204")
    assert (status, headers["X-A"], body) == (204, "1", b"")
    status, headers, body = await _get(client, url + "/304")
    assert (status, headers["ETag"], body) == (304, "x", b"")
    status, headers, body = await _get(client, url + "/early")
    assert (status, body) == (200, b"late\n")
    status, headers, body = await _get(client, url + "/chunked")
    assert (status, body) == (200, b"abcdefg")
    status, headers, body = await _get(client, url + "/hop")
    assert body == b"ok"
    assert "X-Private" not in headers
    assert "Keep-Alive" not in headers
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]


async def test_surprises_are_502_and_stale_connections_retried(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream)).url
    status, _, body = await _get(client, url + "/garbage")
    assert status == 502
    assert b"sent a response that cannot be relayed" in body
    status, _, body = await _get(client, url + "/drop")
    assert status == 502  # dropped twice: the one retry also failed
    assert (await _get(client, url + "/a"))[2] == b"hello /a"
    # The guest closes a kept-alive connection without saying so: the next request still works.
    assert (await _get(client, url + "/stale"))[2] == b"hello /stale"
    before = raw_upstream.connections
    assert (await _get(client, url + "/a"))[2] == b"hello /a"
    assert raw_upstream.connections == before + 1


async def test_slow_client_pauses_the_guest_with_a_bounded_buffer(
    start_proxy: StartProxy, raw_upstream: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[UpstreamConnection] = []

    class Recording(UpstreamConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(self)
            super().connection_made(transport)

    monkeypatch.setattr(pool_module, "UpstreamConnection", Recording)
    px = await _proxy(start_proxy, raw_upstream)
    reader, writer = await asyncio.open_connection(HOST, int(px.url.rsplit(":", 1)[1]))

    def held_by_proxy() -> int:
        """What the proxy holds for the client: its transports' write buffers."""
        return sum(
            c.transport.get_write_buffer_size()
            for s in px.proxy._servers
            for c in s.connections
            if c.transport is not None
        )

    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        # The client reads nothing: the proxy must stop reading from the guest, which then
        # keeps most of its 50 MB (socket buffers on both hops hold at most ~20 MB).
        await wait_for(
            lambda: bool(made) and made[0].reading_paused and raw_upstream.unsent() > 20 * 2**20,
            what="the proxy to pause the guest's socket",
        )
        # Paused because the client's buffer filled: one read (256 KiB) past its high water.
        assert held_by_proxy() <= 64 * 1024 + ASYNCIO_READ_BYTES + 64 * 1024
        # The client reads at last: reading resumes and the whole body arrives intact.
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: %d" % BIG_BYTES in head
        received = 0
        peak = 0
        while received < BIG_BYTES:
            chunk = await reader.read(2**20)
            assert chunk
            assert chunk.count(b"x") == len(chunk)
            received += len(chunk)
            peak = max(peak, held_by_proxy())
        assert received == BIG_BYTES
        assert peak <= 64 * 1024 + ASYNCIO_READ_BYTES + 64 * 1024
    finally:
        writer.close()


async def test_read_timeouts_before_and_inside_the_body(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream, read_timeout="0.3s")).url
    status, _, body = await _get(client, url + "/silent")
    assert status == 504
    assert b"sent no response within 0.3s" in body
    assert sum(h.startswith(b"GET /silent") for h in raw_upstream.heads) == 1  # no retry
    # The head came, then the guest stalled inside a small body (read whole before it is
    # sent): the read timeout counts between bytes too, and the client learns of the break.
    status, _, body = await _get(client, url + "/stall")
    assert status == 502
    assert b"broke off its response" in body


async def test_malformed_responses_are_502_without_retry(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream)).url
    for path in ("/badstatus", "/many-headers"):
        status, _, body = await _get(client, url + path)
        assert status == 502, path
        assert b"sent a response that cannot be relayed" in body
        assert sum(h.startswith(b"GET " + path.encode()) for h in raw_upstream.heads) == 1


async def test_chunked_body_streams_and_keeps_the_connection(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream)).url
    status, _, body = await _get(client, url + "/chunked-big")
    assert (status, body) == (200, b"c" * 4096 * CHUNKED_PIECES)
    assert (await _get(client, url + "/a"))[2] == b"hello /a"
    assert raw_upstream.connections == 1  # the trailer ended the body; the connection is reused


async def test_interim_responses_skipped_and_http10_not_reused(
    start_proxy: StartProxy, raw_upstream: RawUpstream, client: aiohttp.ClientSession
) -> None:
    url = (await _proxy(start_proxy, raw_upstream)).url
    status, headers, body = await _get(client, url + "/interim")
    assert (status, body) == (200, b"ok")
    assert "Link" not in headers  # the 103's header stays with the 103
    await _get(client, url + "/a")
    assert raw_upstream.connections == 1
    assert (await _get(client, url + "/http10"))[2] == b"10"
    await _get(client, url + "/a")
    # HTTP/1.0 without keep-alive: not reused, though this guest left it open.
    assert raw_upstream.connections == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    """Records one exchange's callbacks on an upstream connection."""

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.body = bytearray()
        self.ended = asyncio.Event()
        self.failure: UpstreamFailure | None = None

    def response_head(self, head: ResponseHead) -> None:
        self.head = head
        if head.status == 101:
            self.ended.set()

    def response_body(self, data: bytes) -> None:
        self.body += data

    def response_end(self) -> None:
        self.ended.set()

    def tunnel_data(self, data: bytes) -> None:
        return None

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self.failure = failure
        self.ended.set()

    def upstream_flush(self) -> None:
        return None

    def upstream_writable(self, writable: bool) -> None:
        return None


async def _exchange(pool: UpstreamPool, key: PoolKey, path: str) -> tuple[Sink, UpstreamConnection]:
    conn = pool.take(key) or await pool.connect(key)
    sink = Sink()
    head = f"GET {path} HTTP/1.1\r\nHost: raw.test\r\n\r\n".encode()
    conn.start(sink, head, head_request=False, upgrade=path == "/switch")
    async with asyncio.timeout(5):
        await sink.ended.wait()
    return sink, conn


async def test_pool_drops_idle_connections_and_ends_on_101(raw_upstream: RawUpstream) -> None:
    clock = FakeClock()
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=5.0, keepalive_s=15.0, clock=clock)
    key = PoolKey(HOST, raw_upstream.port, False)
    try:

        async def get(path: str) -> bytes:
            sink, conn = await _exchange(pool, key, path)
            pool.release(conn)
            return bytes(sink.body)

        assert await get("/a") == b"hello /a"
        clock.now += 14.0
        assert await get("/b") == b"hello /b"
        assert raw_upstream.connections == 1  # idle 14 s: reused
        clock.now += 16.0
        assert await get("/c") == b"hello /c"
        assert raw_upstream.connections == 2  # idle 16 s: past keep-alive, a new connection
        sink, conn = await _exchange(pool, key, "/switch")
        assert sink.head is not None
        assert sink.head.status == 101
        pool.release(conn)
        assert pool.idle_count(key) == 0  # a 101 is never pooled: it is another protocol now
        conn.close()
        assert await get("/d") == b"hello /d"
        assert raw_upstream.connections == 3
    finally:
        pool.close()


async def test_a_101_to_a_request_without_upgrade_is_malformed(raw_upstream: RawUpstream) -> None:
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=5.0)
    key = PoolKey(HOST, raw_upstream.port, False)
    conn = await pool.connect(key)
    sink = Sink()
    conn.start(
        sink, b"GET /switch HTTP/1.1\r\nHost: raw.test\r\n\r\n", head_request=False, upgrade=False
    )
    async with asyncio.timeout(5):
        await sink.ended.wait()
    assert sink.failure is not None
    assert sink.failure.kind == "malformed"
    assert sink.head is None
    pool.close()


async def test_pool_connect_refused_is_a_connect_failure() -> None:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = UpstreamPool(connect_timeout=1.0, read_timeout=1.0)
    with pytest.raises(UpstreamFailure) as caught:
        await pool.connect(PoolKey(HOST, port, False))
    assert caught.value.kind == "connect"
    pool.close()


class _IdleConnection:
    """Stands in for a guest connection that finished its response."""

    usable = True
    key = PoolKey("127.0.0.1", 8080, False)
    idle_since = 0.0

    def __init__(self) -> None:
        self.closed = False

    def detach(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_the_pool_keeps_at_most_max_idle_connections_per_guest() -> None:
    pool = UpstreamPool(connect_timeout=1, read_timeout=1, keepalive_s=15, clock=FakeClock())
    burst = [_IdleConnection() for _ in range(MAX_IDLE_PER_GUEST + 10)]
    for conn in burst:
        pool.release(conn)  # type: ignore[arg-type]
    # The oldest beyond the cap are closed at once, not left open until the guest gives up.
    assert sum(c.closed for c in burst) == 10
    assert all(c.closed for c in burst[:10])
    pool.close()
    assert all(c.closed for c in burst)
