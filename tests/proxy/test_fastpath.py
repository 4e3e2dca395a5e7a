"""The lean upstream client for bodiless GET/HEAD: the same bytes on the wire as aiohttp's,
keep-alive reuse only when it is safe, and HTTP/1.1 framing corner cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from pxproxy.proxy import fastpath
from pxproxy.proxy.fastpath import (
    MAX_IDLE_PER_GUEST,
    FastPool,
    UpstreamConnectError,
    request_head,
)
from pxproxy.proxy.upstream_protocol import BODY_HIGH_WATER_BYTES, UpstreamProtocol

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


async def test_head_bytes_match_aiohttp_client(raw_upstream: RawUpstream) -> None:
    headers = CIMultiDict(
        [("Host", "raw.test"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("X-Forwarded-For", "1.2.3.4")]
    )
    async with aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    ) as session:
        for method in ("GET", "HEAD"):
            url = f"http://{HOST}:{raw_upstream.port}/p%20q?x=1&y=%41"
            async with session.request(
                method, URL(url, encoded=True), headers=headers, compress=None
            ) as resp:
                await resp.read()
            assert raw_upstream.heads[-1] == request_head(method, "/p%20q?x=1&y=%41", headers)


def test_head_refuses_what_it_cannot_send_like_aiohttp() -> None:
    assert request_head("GET", "/", CIMultiDict()) is None  # no Host: aiohttp adds one
    assert request_head("GET", "/a#b", CIMultiDict(Host="h")) is None
    assert request_head("GET", "/", CIMultiDict(Host="h", X="a\r\nb")) is None
    assert request_head("GET", "/", CIMultiDict(Host="h", X="\udcff")) is None


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
    assert px.proxy._session is None  # all of it went through the lean client


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
    assert b"failed before responding" in body
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
    made: list[UpstreamProtocol] = []

    class Recording(UpstreamProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(self)
            super().connection_made(transport)

    monkeypatch.setattr(fastpath, "UpstreamProtocol", Recording)
    px = await _proxy(start_proxy, raw_upstream)
    reader, writer = await asyncio.open_connection(HOST, int(px.url.rsplit(":", 1)[1]))
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        # The client reads nothing: the proxy must stop reading from the guest, which then
        # keeps most of its 50 MB (socket buffers on both hops hold at most ~20 MB).
        await wait_for(
            lambda: bool(made) and made[0].reading_paused and raw_upstream.unsent() > 20 * 2**20,
            what="the proxy to pause the guest's socket",
        )
        body = made[0].body
        assert body.peak_buffered <= BODY_HIGH_WATER_BYTES + ASYNCIO_READ_BYTES
        assert body.buffered >= BODY_HIGH_WATER_BYTES  # paused because full, not by chance
        # The client reads at last: reading resumes and the whole body arrives intact.
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Content-Length: %d" % BIG_BYTES in head
        received = 0
        while received < BIG_BYTES:
            chunk = await reader.read(2**20)
            assert chunk
            assert chunk.count(b"x") == len(chunk)
            received += len(chunk)
        assert received == BIG_BYTES
        assert made[0].body.peak_buffered <= BODY_HIGH_WATER_BYTES + ASYNCIO_READ_BYTES
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
        assert b"failed before responding" in body
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


async def test_pool_drops_idle_connections_and_ends_on_101(raw_upstream: RawUpstream) -> None:
    clock = FakeClock()
    pool = FastPool(connect_timeout=1.0, read_timeout=5.0, keepalive_s=15.0, clock=clock)
    try:

        async def get(path: str) -> bytes:
            head = request_head("GET", path, {"Host": "raw.test"})
            assert head is not None
            resp = await pool.request(HOST, raw_upstream.port, head, skip_payload=False)
            body = await resp.read()
            resp.release()
            return body

        assert await get("/a") == b"hello /a"
        clock.now += 14.0
        assert await get("/b") == b"hello /b"
        assert raw_upstream.connections == 1  # idle 14 s: reused
        clock.now += 16.0
        assert await get("/c") == b"hello /c"
        assert raw_upstream.connections == 2  # idle 16 s: past keep-alive, a new connection
        head = request_head("GET", "/switch", {"Host": "raw.test"})
        assert head is not None
        resp = await pool.request(HOST, raw_upstream.port, head, skip_payload=False)
        assert resp.status == 101
        assert await resp.content.readany() == b""
        resp.release()
        assert await get("/d") == b"hello /d"
        assert raw_upstream.connections == 3  # a 101 ends the exchange and the connection
    finally:
        pool.close()


async def test_pool_connect_refused_is_a_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = FastPool(connect_timeout=1.0, read_timeout=1.0, keepalive_s=15.0)
    head = request_head("GET", "/", {"Host": "raw.test"})
    assert head is not None
    with pytest.raises(UpstreamConnectError) as caught:
        await pool.request(HOST, port, head, skip_payload=False)
    assert isinstance(caught.value, aiohttp.ClientConnectionError)
    assert caught.value.port == port
    pool.close()


class _IdleConnection:
    """Stands in for a guest connection that finished its response."""

    reusable = True

    def __init__(self) -> None:
        self.closed = False

    def release(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_the_pool_keeps_at_most_max_idle_connections_per_guest() -> None:
    pool = FastPool(connect_timeout=1, read_timeout=1, keepalive_s=15)
    burst = [_IdleConnection() for _ in range(MAX_IDLE_PER_GUEST + 10)]
    for conn in burst:
        pool.release(("127.0.0.1", 8080), conn)  # type: ignore[arg-type]
    # The oldest beyond the cap are closed at once, not left open until the guest gives up.
    assert sum(c.closed for c in burst) == 10
    assert all(c.closed for c in burst[:10])
    pool.close()
    assert all(c.closed for c in burst)
