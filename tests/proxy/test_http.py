"""The HTTP proxy end to end: real sockets to real lab guest servers on 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from ..support import wait_for
from .conftest import (
    BLOG,
    GAME,
    HOST,
    WIKI,
    Lab,
    StartProxy,
    lab_guests,
    publish,
    routes,
    snapshot_guest,
)

LAB_ROUTES = routes(
    {"host": ["wiki.test", "wiki.alt.test"], "guest": "wiki", "port": 8080},
    {"host": "*.blog.test", "guest": "blog", "port": 8080},
    {"host": "*.test", "guest": "game", "port": 8080},
)
WIKI_TEXT = f"wiki (vmid {WIKI})\n"
BLOG_TEXT = f"blog (vmid {BLOG})\n"
GAME_TEXT = f"game (vmid {GAME})\n"
Serve = Callable[[web.Application], Awaitable[int]]


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def get_text(
    session: aiohttp.ClientSession, url: str, host: str, **kw: object
) -> tuple[int, str]:
    async with session.get(url, headers={"Host": host}, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


async def test_routes_by_exact_host_and_longest_wildcard(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    assert await get_text(client, px.url + "/", "WIKI.test:80") == (200, WIKI_TEXT)
    assert await get_text(client, px.url + "/", "wiki.alt.test.") == (200, WIKI_TEXT)
    assert await get_text(client, px.url + "/", "a.b.blog.test") == (200, BLOG_TEXT)
    assert await get_text(client, px.url + "/", "other.test") == (200, GAME_TEXT)
    assert ("wiki.test", 200) in [(r, s) for r, s, _ in px.metrics.requests]
    assert all(n == 0 for n in px.metrics.open.values())


async def test_unknown_host_is_404_naming_it(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    async with client.get(px.url + "/", headers={"Host": "nope.example"}) as resp:
        assert resp.status == 404
        body = json.loads(await resp.text())
    assert body["host"] == "nope.example"
    assert "nope.example" in body["detail"]
    assert px.metrics.requests[-1] == ("unmatched", 404, None)


async def test_big_download_exact_and_streamed(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    size = 50 * 1024 * 1024 + 7
    total = 0
    async with client.get(f"{px.url}/big?bytes={size}", headers={"Host": "wiki.test"}) as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        async for chunk in resp.content.iter_any():
            total += len(chunk)
    assert total == size


async def test_100mb_upload_round_trip_with_bounded_memory(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    size = 100 * 1024 * 1024
    piece = b"y" * 65536

    async def upload() -> AsyncIterator[bytes]:
        left = size
        while left:
            n = min(left, len(piece))
            left -= n
            yield piece[:n]

    tracemalloc.start()
    try:
        echoed = 0
        async with client.post(
            px.url + "/echo", data=upload(), headers={"Host": "wiki.test"}
        ) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                echoed += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert echoed == size
    # Client, proxy and guest together: a few socket buffers, nowhere near the 100 MB body.
    assert peak < 16 * 1024 * 1024, f"peak {peak} bytes traced"


async def test_websocket_echo_ping_and_close(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    async with client.ws_connect(
        px.url + "/ws", headers={"Host": "wiki.test"}, autoping=False
    ) as ws:
        assert px.metrics.open["wiki.test"] == 1
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.BINARY, b"\x00\x01binary")
        # The guest answers pings (aiohttp's autoping); the pong comes back through us.
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        await ws.close(code=4001, message=b"bye")
    assert ws.close_code is not None
    await wait_for(lambda: px.metrics.open["wiki.test"] == 0, 5, "the relay to end")
    assert ("wiki.test", 101) in [(r, s) for r, s, _ in px.metrics.requests]


async def test_sse_events_arrive_one_by_one(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    arrivals: list[tuple[float, bytes]] = []
    async with client.get(px.url + "/sse", headers={"Host": "wiki.test"}) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        async with asyncio.timeout(5):
            while len(arrivals) < 4:
                line = await resp.content.readline()
                if line.startswith(b"data:"):
                    arrivals.append((time.monotonic(), line.strip()))
    assert [data for _, data in arrivals] == [b"data: 0", b"data: 1", b"data: 2", b"data: 3"]
    # The guest sends one every 0.1 s: buffered they would arrive together.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.2


async def test_guest_moving_to_a_new_ip_is_followed(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab))
    assert await get_text(client, px.url + "/", "wiki.test") == (200, WIKI_TEXT)
    # DHCP gave wiki the address blog's server listens on: the next request goes there.
    publish(px.inventory, [snapshot_guest(WIKI, "wiki", (http_lab.guest(BLOG).ip,))])
    assert await get_text(client, px.url + "/", "wiki.test") == (200, BLOG_TEXT)


async def test_no_address_is_502_saying_so(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(LAB_ROUTES, [snapshot_guest(WIKI, "wiki", ())])
    async with client.get(px.url + "/", headers={"Host": "wiki.test"}) as resp:
        assert resp.status == 502
        body = await resp.json(content_type=None)
    assert "has no IP address yet" in body["detail"]
    status, text = await get_text(client, px.url + "/", "a.blog.test")
    assert status == 502
    assert "'blog' is not in the inventory" in text


async def test_refused_connection_is_502_and_proxy_keeps_serving(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    closed = (*routes({"host": "closed.test", "guest": "wiki", "port": 9}), *LAB_ROUTES)
    px = await start_proxy(closed, lab_guests(http_lab))
    status, text = await get_text(client, px.url + "/", "closed.test")
    assert status == 502
    assert f"cannot connect to guest lab:{WIKI} (wiki)" in text
    assert await get_text(client, px.url + "/", "wiki.test") == (200, WIKI_TEXT)


async def test_read_timeout_is_504(
    start_proxy: StartProxy, upstream_app: Serve, client: aiohttp.ClientSession
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_get("/", slow)
    port = await upstream_app(app)
    px = await start_proxy(
        routes({"host": "slow.test", "guest": "wiki", "port": port}),
        [snapshot_guest(101, "wiki", (HOST,))],
        read_timeout="0.3s",
    )
    try:
        status, text = await get_text(client, px.url + "/", "slow.test")
    finally:
        release.set()
    assert status == 504
    assert "sent no response within 0.3s" in text


async def test_forwarding_headers_untrusted_and_trusted(
    start_proxy: StartProxy, upstream_app: Serve, client: aiohttp.ClientSession
) -> None:
    async def show(request: web.Request) -> web.Response:
        seen = {k: ", ".join(request.headers.getall(k)) for k in request.headers}
        return web.json_response(
            seen,
            headers={"Connection": "X-Internal", "X-Internal": "secret", "X-Kept": "1"},
        )

    async def path(request: web.Request) -> web.Response:
        return web.Response(text=request.raw_path)

    app = web.Application()
    app.router.add_get("/headers", show)
    app.router.add_get("/{tail:.*}", path)
    port = await upstream_app(app)
    route = routes(
        {"host": "h.test", "guest": "echo", "port": port},
        {"host": "p.test", "guest": "echo", "port": port, "path_prefix": "/base/"},
    )
    guests = [snapshot_guest(101, "echo", (HOST,))]
    spoof = {
        "Host": "h.test",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=6.6.6.6",
        "Connection": "keep-alive, X-Secret",
        "X-Secret": "hop",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic eDp5",
        "TE": "trailers",
    }

    untrusted = await start_proxy(route, guests)
    async with client.get(untrusted.url + "/headers", headers=spoof) as resp:
        seen = await resp.json()
        assert "X-Internal" not in resp.headers
        assert resp.headers["X-Kept"] == "1"
    assert seen["Host"] == "h.test"
    assert seen["X-Forwarded-For"] == HOST
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == "h.test"
    assert seen["Forwarded"] == 'for=127.0.0.1;host="h.test";proto=http'
    for hop in ("X-Secret", "Keep-Alive", "Proxy-Authorization", "TE"):
        assert hop not in seen
    # path_prefix goes in front, the path and query pass undecoded.
    prefixed = await get_text(client, untrusted.url + "/a%2Fb?q=%20x", "p.test")
    assert prefixed == (200, "/base/a%2Fb?q=%20x")

    trusted = await start_proxy(route, guests, trusted_proxies=["127.0.0.0/8"])
    async with client.get(trusted.url + "/headers", headers=spoof) as resp:
        seen = await resp.json()
    assert seen["X-Forwarded-For"] == "6.6.6.6, 127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "https"
    assert seen["Forwarded"] == 'for=6.6.6.6, for=127.0.0.1;host="h.test";proto=http'


async def raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read(65536)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_malformed_requests_get_400_and_proxy_keeps_serving(
    http_lab: Lab,
    start_proxy: StartProxy,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pxproxy")
    px = await start_proxy(LAB_ROUTES, lab_guests(http_lab), max_header_size=1024)
    bad_header = await raw_exchange(px.url, b"GET / HTTP/1.1\r\nHost wiki.test\r\n\r\n")
    assert bad_header[:12] in BAD_REQUEST
    garbage = await raw_exchange(px.url, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert garbage[:12] in BAD_REQUEST
    no_host = await raw_exchange(px.url, b"GET / HTTP/1.1\r\n\r\n")
    assert no_host[:12] in BAD_REQUEST
    assert b"Host" in no_host
    no_host_10 = await raw_exchange(px.url, b"GET / HTTP/1.0\r\n\r\n")
    assert no_host_10[:12] in BAD_REQUEST
    assert no_host_10.endswith(b"a Host header is required\n")
    huge = b"GET / HTTP/1.1\r\nHost: wiki.test\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n"
    too_big = await raw_exchange(px.url, huge)
    assert too_big[:12] in (*BAD_REQUEST, b"HTTP/1.1 431")
    # One authority per request (RFC 9112 §3.2.2): a target naming another host than Host
    # would be routed one way here and another way further on.
    conflicting = await raw_exchange(
        px.url, b"GET http://wiki.test/healthz HTTP/1.1\r\nHost: ignored\r\n\r\n"
    )
    assert conflicting.startswith(b"HTTP/1.1 400")
    absolute = await raw_exchange(
        px.url, b"GET http://wiki.test/healthz HTTP/1.1\r\nHost: wiki.test\r\n\r\n"
    )
    assert absolute.startswith(b"HTTP/1.1 200")
    assert absolute.endswith(b"ok")
    assert await get_text(client, px.url + "/", "wiki.test") == (200, WIKI_TEXT)
    # Logged as the client's mistake, one line each, no traceback.
    assert not [r for r in caplog.records if r.exc_info]
    assert any("Invalid header token" in r.getMessage() for r in caplog.records)


BAD_REQUEST = (b"HTTP/1.0 400", b"HTTP/1.1 400")


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.fixture
async def resetting_upstream() -> AsyncIterator[int]:
    """A guest that resets: /partial after 100 of 1000 promised bytes, /partial-big after 100
    of 1 MiB (streamed, not buffered), /none before answering."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if head.startswith((b"GET /partial-big", b"GET /partial ")):
            length = 1 << 20 if head.startswith(b"GET /partial-big") else 1000
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length + b"z" * 100)
            await writer.drain()
        _rst(writer)

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_upstream_reset_mid_response_cuts_client_cleanly(
    http_lab: Lab,
    start_proxy: StartProxy,
    resetting_upstream: int,
    client: aiohttp.ClientSession,
) -> None:
    bad = (*routes({"host": "reset.test", "guest": "rst", "port": resetting_upstream}), *LAB_ROUTES)
    px = await start_proxy(bad, [snapshot_guest(99, "rst", (HOST,)), *lab_guests(http_lab)])
    # A large body is streamed: the status is already out, so the client is cut off and sees
    # a truncated body, never a complete-looking one.
    async with client.get(px.url + "/partial-big", headers={"Host": "reset.test"}) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    # A small body is read whole before anything is sent: the client gets a clean 502.
    status, text = await get_text(client, px.url + "/partial", "reset.test")
    assert status == 502
    assert "broke off" in text
    # Nothing sent yet when the guest resets: a 502 that says what happened.
    status, text = await get_text(client, px.url + "/none", "reset.test")
    assert status == 502
    assert "failed before responding" in text
    assert await get_text(client, px.url + "/", "wiki.test") == (200, WIKI_TEXT)


async def test_body_over_the_limit_is_413(
    start_proxy: StartProxy, upstream_app: Serve, client: aiohttp.ClientSession
) -> None:
    received: list[int] = []

    async def sink(request: web.Request) -> web.Response:
        received.append(len(await request.read()))
        return web.Response(text="stored")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/upload", sink)
    port = await upstream_app(app)
    px = await start_proxy(
        routes({"host": "up.test", "guest": "sink", "port": port}),
        [snapshot_guest(101, "sink", (HOST,))],
        max_body_size=1024 * 1024,
    )
    url = px.url + "/upload"
    headers = {"Host": "up.test"}
    async with client.post(url, data=b"a" * 1000, headers=headers) as resp:
        assert (resp.status, await resp.text()) == (200, "stored")
    # Expect: 100-continue is answered by the proxy once the size is known to be fine.
    async with client.post(url, data=b"c" * 500, headers=headers, expect100=True) as resp:
        assert (resp.status, await resp.text()) == (200, "stored")
    # Declared too large: refused before anything reaches the guest.
    async with client.post(url, data=b"a" * (2 * 1024 * 1024), headers=headers) as resp:
        assert resp.status == 413
        assert "larger than 1048576 bytes" in await resp.text()

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"b" * 65536

    # Chunked: found out on the way, the guest's upload is aborted, never completed.
    async with client.post(url, data=chunked(), headers=headers) as resp:
        assert resp.status == 413
    assert received == [1000, 500]
