"""Bad input from either side: slowloris clients, slow guests, guests that reset mid-response
and clients that stall inside an upload. The proxy bounds what it holds, closes what it must,
and goes on serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from pxproxy.proxy import pool as pool_module
from pxproxy.proxy.upstream_conn import UpstreamConnection

from ..support import wait_for
from .conftest import HOST, RunningProxy, StartProxy, routes, snapshot_guest
from .raw_client import RawClient

Serve = Callable[[web.Application], Awaitable[int]]
Guest = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

SLOWLORIS_CONNECTIONS = 300
SLOWLORIS_BYTE_INTERVAL_S = 0.1
HEADER_TIMEOUT_S = 1.0
# The sweep that enforces it runs every 0.25 s; the rest is slack for a loaded machine.
HEADER_TIMEOUT_SLACK_S = 1.5
# What the proxy may hold for one slow peer: a write buffer's high water (64 KiB), one read
# past it (asyncio reads up to 256 KiB at a time) and a high water's worth of slack.
ASYNCIO_READ_BYTES = 256 * 1024
HELD_BOUND = 64 * 1024 + ASYNCIO_READ_BYTES + 64 * 1024
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


@pytest.fixture
async def raw_guest() -> AsyncIterator[Callable[[Guest], Awaitable[int]]]:
    """serve(handler) → the port of a hand-made guest speaking raw bytes on 127.0.0.1."""
    servers: list[asyncio.Server] = []
    handlers: set[asyncio.Task[object]] = set()

    async def serve(handler: Guest) -> int:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                handlers.discard(task)
                writer.close()

        server = await asyncio.start_server(guarded, HOST, 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    try:
        yield serve
    finally:
        for server in servers:
            server.close()
        for task in list(handlers):  # a guest that never answers waits until now
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()


def _port(px: RunningProxy) -> int:
    return int(px.url.rsplit(":", 1)[1])


def _open_connections(px: RunningProxy) -> int:
    return sum(len(server.connections) for server in px.proxy._servers)


def _held_for_clients(px: RunningProxy) -> int:
    """What the proxy holds for its clients: their transports' write buffers."""
    return sum(
        c.transport.get_write_buffer_size()
        for s in px.proxy._servers
        for c in s.connections
        if c.transport is not None
    )


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _ok_app(upstream_app: Serve) -> int:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    return await upstream_app(app)


# ---------------------------------------------------------------------------- slowloris


@dataclass
class _Normal:
    """A well-behaved client during the attack: on a kept-alive connection and on new ones."""

    statuses: list[int] = field(default_factory=list)
    slowest_s: float = 0.0


async def _slowloris(port: int, closed_after: list[float]) -> None:
    """A partial head, one byte at a time, never finished; records when the proxy closed."""
    reader, writer = await asyncio.open_connection(HOST, port)
    began = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: slow.test\r\nX-Slow: "

    async def trickle() -> None:
        i = 0
        while True:
            writer.write(head[i : i + 1] if i < len(head) else b"a")
            i += 1
            await asyncio.sleep(SLOWLORIS_BYTE_INTERVAL_S)

    sender = asyncio.create_task(trickle())
    try:
        with contextlib.suppress(ConnectionError):
            rest = await reader.read()
            assert rest == b"", rest  # closed, not answered
        closed_after.append(time.monotonic() - began)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()


async def _serve_normally(
    px: RunningProxy, session: aiohttp.ClientSession, normal: _Normal, until: asyncio.Event
) -> None:
    while not until.is_set():
        began = time.monotonic()
        async with session.get(px.url + "/", headers={"Host": "slow.test"}) as resp:
            assert await resp.text() == "ok"
            normal.statuses.append(resp.status)
        fresh = await RawClient.connect(_port(px))
        try:
            await fresh.send(b"GET / HTTP/1.1\r\nHost: slow.test\r\nConnection: close\r\n\r\n")
            reply = await fresh.reply()
            normal.statuses.append(reply.status)
        finally:
            await fresh.close()
        normal.slowest_s = max(normal.slowest_s, time.monotonic() - began)


async def test_slowloris_is_closed_at_the_header_timeout_while_others_are_served(
    start_proxy: StartProxy, upstream_app: Serve, client: aiohttp.ClientSession
) -> None:
    port = await _ok_app(upstream_app)
    px = await start_proxy(
        routes({"host": "slow.test", "guest": "slow", "port": port}),
        [snapshot_guest(7201, "slow", (HOST,))],
        header_timeout=f"{HEADER_TIMEOUT_S}s",
    )
    async with client.get(px.url + "/", headers={"Host": "slow.test"}) as resp:
        assert resp.status == 200  # the normal client's kept-alive connection
        await resp.read()
    baseline = _open_connections(px)
    assert baseline == 1

    closed_after: list[float] = []
    attack = [
        asyncio.create_task(_slowloris(_port(px), closed_after))
        for _ in range(SLOWLORIS_CONNECTIONS)
    ]
    normal = _Normal()
    done = asyncio.Event()
    serving = asyncio.create_task(_serve_normally(px, client, normal, done))
    try:
        await wait_for(
            lambda: _open_connections(px) >= baseline + SLOWLORIS_CONNECTIONS,
            5,
            "every slowloris connection to be open",
        )
        await asyncio.wait_for(asyncio.gather(*attack), HEADER_TIMEOUT_S + 10)
    finally:
        done.set()
        for task in attack:
            task.cancel()
        await asyncio.gather(*attack, return_exceptions=True)
        await serving

    # Each was closed at the header timeout: never before it, and within a sweep or so after.
    assert len(closed_after) == SLOWLORIS_CONNECTIONS
    assert min(closed_after) >= HEADER_TIMEOUT_S
    assert max(closed_after) <= HEADER_TIMEOUT_S + HEADER_TIMEOUT_SLACK_S
    assert px.proxy._servers[0].header_timeouts == SLOWLORIS_CONNECTIONS
    # Everyone else was served throughout, without waiting on the attack.
    assert len(normal.statuses) >= 4
    assert set(normal.statuses) == {200}
    assert normal.slowest_s < HEADER_TIMEOUT_S
    await wait_for(lambda: _open_connections(px) == baseline, 5, "the count back to baseline")
    async with client.get(px.url + "/", headers={"Host": "slow.test"}) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")


# ---------------------------------------------------------------------------- slow guests


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[UpstreamConnection]:
    """The proxy's upstream connections, as they are made."""
    made: list[UpstreamConnection] = []

    class Recording(UpstreamConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(self)
            super().connection_made(transport)

    monkeypatch.setattr(pool_module, "UpstreamConnection", Recording)
    return made


TRICKLE_PIECE = 8 * 1024
TRICKLE_PIECES = 256  # 2 MiB: far past what the proxy gathers before it sends (64 KiB)


async def test_a_guest_trickling_a_body_reaches_a_fast_client_streamed_and_intact(
    start_proxy: StartProxy,
    raw_guest: Callable[[Guest], Awaitable[int]],
    client: aiohttp.ClientSession,
) -> None:
    body = random.Random(7201).randbytes(TRICKLE_PIECE * TRICKLE_PIECES)
    sent = [0]

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            chunked = head.startswith(b"GET /chunked")
            framing = (
                b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
            )
            writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\n")
            sent[0] = 0
            for i in range(0, len(body), TRICKLE_PIECE):
                piece = body[i : i + TRICKLE_PIECE]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                sent[0] += len(piece)
                await asyncio.sleep(0.001)
            if chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    port = await raw_guest(trickle)
    px = await start_proxy(
        routes({"host": "trickle.test", "guest": "trickle", "port": port}),
        [snapshot_guest(7202, "trickle", (HOST,))],
    )
    for path in ("/length", "/chunked"):
        digest = hashlib.sha256()
        received = 0
        first_seen_with_sent: int | None = None
        peak = 0
        async with client.get(px.url + path, headers={"Host": "trickle.test"}) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                if first_seen_with_sent is None:
                    first_seen_with_sent = sent[0]
                digest.update(chunk)
                received += len(chunk)
                peak = max(peak, _held_for_clients(px))
        assert received == len(body), path
        assert digest.digest() == hashlib.sha256(body).digest(), path
        # Streamed as it came, not gathered: the client had bytes long before the guest was
        # done, and the proxy never held more than a buffer's worth.
        assert first_seen_with_sent is not None
        assert first_seen_with_sent < len(body) // 2, path
        assert peak <= HELD_BOUND, path


UPLOAD_BYTES = 32 * 1024 * 1024


async def test_a_guest_reading_an_upload_slowly_pauses_the_client_with_a_bounded_buffer(
    start_proxy: StartProxy,
    raw_guest: Callable[[Guest], Awaitable[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = _recording(monkeypatch)
    body = random.Random(7203).randbytes(UPLOAD_BYTES)
    go = asyncio.Event()
    digest = hashlib.sha256()

    async def slow_reader(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: %d" % UPLOAD_BYTES in head
        await go.wait()  # reads nothing until told: the proxy must not take the whole body in
        left = UPLOAD_BYTES
        while left:
            piece = await reader.read(min(left, 65536))
            assert piece
            digest.update(piece)
            left -= len(piece)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstored")
        await writer.drain()

    port = await raw_guest(slow_reader)
    px = await start_proxy(
        routes({"host": "upload.test", "guest": "upload", "port": port}),
        [snapshot_guest(7204, "upload", (HOST,))],
    )
    up = await RawClient.connect(_port(px))
    head = b"PUT /u HTTP/1.1\r\nHost: upload.test\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES
    up._writer.write(head + body)  # the client's own buffer takes what the proxy does not

    def held_for_guest() -> int:
        return sum(c.transport.get_write_buffer_size() for c in made if c.transport is not None)

    def client_unsent() -> int:
        return up._writer.transport.get_write_buffer_size()

    try:
        # Socket buffers on both hops hold a few MiB at most; the rest stays with the client.
        await wait_for(
            lambda: bool(made) and client_unsent() > UPLOAD_BYTES // 2,
            10,
            "the proxy to stop reading the upload",
        )
        assert held_for_guest() <= HELD_BOUND
        go.set()
        reply = await up.reply(timeout_s=30)
        assert (reply.status, reply.body) == (200, b"stored")
        assert digest.digest() == hashlib.sha256(body).digest()
    finally:
        go.set()
        await up.close()


# ---------------------------------------------------------------------------- resets


def _accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


async def _resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """/chunked-small: one chunk then a reset; /chunked-big: 1 MiB of chunks then a reset;
    /half-head: part of a status line then a reset; /small: 100 of 1000 bytes then a reset;
    anything else: a whole "ok"."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1]
        if target == b"/chunked-small":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        elif target == b"/chunked-big":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"1000\r\n" + b"c" * 4096 + b"\r\n"
            writer.write(piece * 256)
        elif target == b"/half-head":
            writer.write(b"HTTP/1.1 200 O")
        elif target == b"/small":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            continue
        await writer.drain()
        _rst(writer)
        return


async def test_a_chunked_response_reset_mid_body_cuts_the_client_short_of_its_end(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    port = await raw_guest(_resetting)
    px = await start_proxy(
        routes({"host": "reset.test", "guest": "reset", "port": port}),
        [snapshot_guest(7205, "reset", (HOST,))],
    )
    for path in (b"/chunked-small", b"/chunked-big"):
        cut = await RawClient.connect(_port(px))
        try:
            await cut.send(b"GET %b HTTP/1.1\r\nHost: reset.test\r\n\r\n" % path)
            assert await cut.closed()
        finally:
            await cut.close()
        received = bytes(cut.received)
        # The head went out with the first chunk: the client sees it, then a cut, and never
        # the last chunk that would make the body look complete.
        assert received.startswith(b"HTTP/1.1 200 OK\r\n"), path
        assert b"transfer-encoding: chunked" in received.lower(), path
        assert not received.endswith(b"0\r\n\r\n"), path
        assert cut.pending == 0, path
    # The proxy keeps serving, the same guest too.
    assert px.proxy.pool.idle_count() <= 1
    ok = await RawClient.connect(_port(px))
    try:
        await ok.send(b"GET / HTTP/1.1\r\nHost: reset.test\r\n\r\n")
        assert (await ok.reply()).body == b"ok"
    finally:
        await ok.close()
    assert _open_connections(px) == 1


async def test_a_reset_before_the_head_went_out_is_a_502_and_the_connection_goes_on(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    port = await raw_guest(_resetting)
    px = await start_proxy(
        routes({"host": "reset.test", "guest": "reset", "port": port}),
        [snapshot_guest(7206, "reset", (HOST,))],
    )
    conn = await RawClient.connect(_port(px))
    try:
        # On one kept-alive client connection: each reset is a clean 502, and the next
        # request on the same connection is served.
        for path, says in ((b"/small", b"broke off"), (b"/half-head", b"failed before")):
            await conn.send(b"GET %b HTTP/1.1\r\nHost: reset.test\r\n\r\n" % path)
            reply = await conn.reply()
            assert reply.status == 502, path
            assert says in reply.body, (path, reply.body)
            await conn.send(b"GET / HTTP/1.1\r\nHost: reset.test\r\n\r\n")
            assert (await conn.reply()).body == b"ok", path
        assert not conn.eof
    finally:
        await conn.close()


async def test_a_guest_resetting_a_websocket_closes_the_client_side(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    async def ws_then_reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"GET /ws"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %b\r\n\r\n" % _accept_key(key).encode()
        )
        writer.write(b"\x81\x05hello")  # one text frame, then the reset
        await writer.drain()
        await reader.readexactly(2 + 4 + 2)  # the client's masked "hi"
        _rst(writer)

    port = await raw_guest(ws_then_reset)
    px = await start_proxy(
        routes({"host": "ws.test", "guest": "ws", "port": port}),
        [snapshot_guest(7207, "ws", (HOST,))],
    )
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(px.url + "/ws", headers={"Host": "ws.test"}) as ws,
    ):
        assert (await ws.receive(timeout=5)).data == "hello"
        assert len(px.proxy.tunnels) == 1
        await ws.send_str("hi")
        msg = await ws.receive(timeout=5)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), msg
    await wait_for(lambda: not px.proxy.tunnels, 5, "the tunnel to end")
    assert px.metrics.open.get("ws.test") == 0
    await wait_for(lambda: _open_connections(px) == 0, 5, "the client side to be closed")
    async with (
        aiohttp.ClientSession() as session,
        session.get(px.url + "/", headers={"Host": "ws.test"}) as resp,
    ):
        assert (resp.status, await resp.text()) == (200, "ok")


# ---------------------------------------------------------------------------- stalled uploads

STALL_TIMEOUT_S = 0.5


async def test_a_client_stalling_inside_a_sized_upload_gets_408_not_the_guests_504(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    guest_got: list[bytes] = []

    async def waits_for_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        guest_got.append(await reader.read())  # until the proxy gives up on the upload

    port = await raw_guest(waits_for_body)
    px = await start_proxy(
        routes({"host": "stall.test", "guest": "stall", "port": port}),
        [snapshot_guest(7208, "stall", (HOST,))],
        read_timeout=f"{STALL_TIMEOUT_S}s",
    )
    stalled = await RawClient.connect(_port(px))
    try:
        began = time.monotonic()
        await stalled.send(
            b"POST /u HTTP/1.1\r\nHost: stall.test\r\nContent-Length: 100000\r\n\r\n" + b"p" * 1000
        )
        # Nobody sends anything more: the guest waits for the body, as it should. The stall
        # is the client's, and so is the answer: a 408, not a 504 that blames the guest.
        reply = await stalled.reply(timeout_s=STALL_TIMEOUT_S + 5)
        assert (reply.status, reply.body) == (408, b"the request body stopped arriving\n")
        assert await stalled.closed()
        assert time.monotonic() - began >= STALL_TIMEOUT_S
    finally:
        await stalled.close()
    await wait_for(lambda: guest_got == [b"p" * 1000], 5, "the guest's side to be closed")
    await wait_for(lambda: _open_connections(px) == 0, 5, "the client side to be closed")


async def test_a_client_stalling_inside_a_small_chunked_upload_gets_408(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    asked: list[bytes] = []

    async def records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append(await reader.read())

    port = await raw_guest(records)
    px = await start_proxy(
        routes({"host": "stall.test", "guest": "stall", "port": port}),
        [snapshot_guest(7209, "stall", (HOST,))],
        read_timeout=f"{STALL_TIMEOUT_S}s",
    )
    stalled = await RawClient.connect(_port(px))
    try:
        began = time.monotonic()
        await stalled.send(
            b"POST /u HTTP/1.1\r\nHost: stall.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        # A chunked body's first 64 KiB is read before the guest is asked, so no guest's
        # read timeout runs: the client side's own clock must end it.
        reply = await stalled.reply(timeout_s=STALL_TIMEOUT_S + 5)
        assert (reply.status, reply.body) == (408, b"the request body stopped arriving\n")
        assert await stalled.closed()
        assert time.monotonic() - began >= STALL_TIMEOUT_S
    finally:
        await stalled.close()
    await wait_for(lambda: _open_connections(px) == 0, 5, "the client side to be closed")
    assert asked == []  # the guest never heard of the request


STEADY_PIECES = 30  # 64 KiB each, one every 0.05 s: the upload lasts three read timeouts


async def test_an_upload_longer_than_the_read_timeout_is_not_cut_while_it_flows(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    piece = b"u" * 65536
    total = len(piece) * STEADY_PIECES

    async def answers_after_the_body(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(total)  # says nothing until the body is whole, as guests do
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nstored")
        await writer.drain()

    port = await raw_guest(answers_after_the_body)
    px = await start_proxy(
        routes({"host": "steady.test", "guest": "steady", "port": port}),
        [snapshot_guest(7213, "steady", (HOST,))],
        read_timeout=f"{STALL_TIMEOUT_S}s",
    )
    up = await RawClient.connect(_port(px))
    try:
        began = time.monotonic()
        await up.send(b"PUT /u HTTP/1.1\r\nHost: steady.test\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(STEADY_PIECES):
            await up.send(piece)
            await asyncio.sleep(0.05)  # the client's pace, not a wait for the proxy
        assert time.monotonic() - began > 2 * STALL_TIMEOUT_S
        reply = await up.reply()
        assert (reply.status, reply.body) == (200, b"stored")
    finally:
        await up.close()


async def test_a_guest_that_stops_taking_an_upload_in_is_given_up_on(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    async def takes_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.Event().wait()  # reads no body and never answers, until cancelled

    port = await raw_guest(takes_nothing)
    px = await start_proxy(
        routes({"host": "deaf.test", "guest": "deaf", "port": port}),
        [snapshot_guest(7215, "deaf", (HOST,))],
        read_timeout=f"{STALL_TIMEOUT_S}s",
    )
    up = await RawClient.connect(_port(px))
    head = b"PUT /u HTTP/1.1\r\nHost: deaf.test\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES
    up._writer.write(head + b"d" * UPLOAD_BYTES)  # more than the sockets hold: it backs up
    try:
        reply = await up.reply(timeout_s=STALL_TIMEOUT_S + 5)
        assert reply.status == 504
        assert b"sent no response within" in reply.body
    finally:
        await up.close()
    await wait_for(lambda: _open_connections(px) == 0, 5, "the client side to be closed")


PUSHED_BACK_BYTES = 8 * 1024 * 1024  # more than the sockets between client and guest hold


async def test_a_client_stalling_after_the_guest_pushed_back_still_gets_408(
    start_proxy: StartProxy,
    raw_guest: Callable[[Guest], Awaitable[int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushed_back = asyncio.Event()

    class Recording(UpstreamConnection):
        def pause_writing(self) -> None:
            pushed_back.set()
            super().pause_writing()

    monkeypatch.setattr(pool_module, "UpstreamConnection", Recording)

    async def slow_then_fast(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await pushed_back.wait()  # slower than the client for a moment, as disks are
        await reader.readexactly(PUSHED_BACK_BYTES)  # then takes all the client sent
        await reader.read()  # and waits for the rest, as it should

    port = await raw_guest(slow_then_fast)
    px = await start_proxy(
        routes({"host": "race.test", "guest": "race", "port": port}),
        [snapshot_guest(7216, "race", (HOST,))],
        read_timeout=f"{STALL_TIMEOUT_S}s",
    )
    up = await RawClient.connect(_port(px))
    try:
        head = b"PUT /u HTTP/1.1\r\nHost: race.test\r\nContent-Length: %d\r\n\r\n" % (
            2 * PUSHED_BACK_BYTES
        )
        await up.send(head + b"r" * PUSHED_BACK_BYTES)
        # Half the body, then nothing: the guest has taken all of it and waits. The stall is
        # the client's, however the guest kept pace before.
        reply = await up.reply(timeout_s=STALL_TIMEOUT_S + 5)
        assert (reply.status, reply.body) == (408, b"the request body stopped arriving\n")
    finally:
        await up.close()


# ------------------------------------------------------------------ clients that stop reading

BIG_ANSWER = 8 * 1024 * 1024


async def _big_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG_ANSWER)
    chunk = b"x" * 65536
    for _ in range(BIG_ANSWER // len(chunk)):
        writer.write(chunk)
        await writer.drain()


def _small_receiver() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # fills at once
    sock.setblocking(False)
    return sock


async def _big_download(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]], vmid: int
) -> tuple[RunningProxy, socket.socket]:
    """A proxy (read_timeout 1 s) to a guest sending BIG_ANSWER, and a client with a small
    receive buffer that has asked for it."""
    port = await raw_guest(_big_answer)
    px = await start_proxy(
        routes({"host": "big.test", "guest": "big", "port": port}),
        [snapshot_guest(vmid, "big", (HOST,))],
        read_timeout="1s",
    )
    loop = asyncio.get_running_loop()
    sock = _small_receiver()
    try:
        await loop.sock_connect(sock, (HOST, _port(px)))
        await loop.sock_sendall(sock, b"GET / HTTP/1.1\r\nHost: big.test\r\n\r\n")
    except BaseException:
        sock.close()
        raise
    return px, sock


async def test_a_client_that_stops_reading_its_answer_is_cut_after_read_timeout(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    px, sock = await _big_download(start_proxy, raw_guest, 7217)
    try:
        # It reads nothing: once its buffers and ours are full, nothing moves for 1 s.
        await wait_for(lambda: _open_connections(px) == 0, 10, "the stalled reader to be cut")
        # The exchange ended with it (and with it the guest connection and any hold).
        await wait_for(lambda: len(px.metrics.requests) == 1, 5, "the exchange to end")
        assert all(count == 0 for count in px.metrics.open.values())
    finally:
        sock.close()


async def test_a_slow_reader_that_keeps_taking_is_not_cut(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    px, sock = await _big_download(start_proxy, raw_guest, 7218)
    loop = asyncio.get_running_loop()
    try:
        # 8 KiB every 0.1 s for three read timeouts: the proxy's buffers stay full (a
        # socket turns writable again only after much of its queue drained), yet the client
        # takes something all the time, so it is never cut.
        got, started = 0, time.monotonic()
        while time.monotonic() - started < 3.0:
            chunk = await loop.sock_recv(sock, 8192)
            assert chunk, f"cut after {got} bytes"
            got += len(chunk)
            await asyncio.sleep(0.1)  # the pace of the reader, not a wait for the proxy
        assert _open_connections(px) == 1
        assert px.metrics.requests == []  # still answering
    finally:
        sock.close()


async def test_trailers_are_bounded_like_a_head(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    async def reads_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    port = await raw_guest(reads_all)
    px = await start_proxy(
        routes({"host": "trail.test", "guest": "trail", "port": port}),
        [snapshot_guest(7219, "trail", (HOST,))],
    )
    client = await RawClient.connect(_port(px))
    try:
        await client.send(
            b"POST / HTTP/1.1\r\nHost: trail.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-Trailer: "
        )
        for _ in range(64):  # 4 MiB of one trailer value; a head gets 431 at 16 KiB
            if client.eof:
                break
            with contextlib.suppress(ConnectionError):
                await client.send(b"a" * 65536)
        reply = await client.reply()
        assert reply.status == 431
        assert await client.closed()
    finally:
        await client.close()


async def test_a_closed_connection_whose_client_never_takes_the_rest_is_reaped(
    start_proxy: StartProxy, raw_guest: Callable[[Guest], Awaitable[int]]
) -> None:
    body = b"y" * 60_000  # under SMALL_BODY_BYTES: the whole answer is written at once

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    port = await raw_guest(answers)
    px = await start_proxy(
        routes({"host": "rest.test", "guest": "rest", "port": port}),
        [snapshot_guest(7220, "rest", (HOST,))],
        read_timeout="1s",
    )
    loop = asyncio.get_running_loop()
    sock = _small_receiver()
    try:
        await loop.sock_connect(sock, (HOST, _port(px)))
        await wait_for(lambda: _open_connections(px) == 1, 5, "the proxy to take the client")
        # Small kernel buffers on the proxy's side too, as on a slow link: most of the answer
        # stays in the transport when the proxy closes after it (Connection: close).
        for server in px.proxy._servers:
            for conn in server.connections:
                assert conn.transport is not None
                raw = conn.transport.get_extra_info("socket")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        request = b"GET / HTTP/1.1\r\nHost: rest.test\r\nConnection: close\r\n\r\n"
        await loop.sock_sendall(sock, request)
        await wait_for(lambda: len(px.metrics.requests) == 1, 5, "the answer to be written")
        # The client reads nothing: without the sweep, close() would wait for ever.
        await wait_for(lambda: _open_connections(px) == 0, 10, "the connection to be reaped")
    finally:
        sock.close()
