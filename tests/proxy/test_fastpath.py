"""The lean upstream client for bodiless GET/HEAD: the same bytes on the wire as aiohttp's,
keep-alive reuse only when it is safe, and HTTP/1.1 framing corner cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from pxproxy.proxy.fastpath import request_head

from .conftest import HOST, RunningProxy, StartProxy, routes, snapshot_guest

Reply = Callable[[bytes], bytes | None]  # request head -> raw response (None: close)


@dataclass
class RawUpstream:
    port: int
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0


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
    length = b"Content-Length: %d\r\n" % len(body)
    return b"HTTP/1.1 200 OK\r\n" + length + b"\r\n" + (b"" if method == b"HEAD" else body)


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    state = RawUpstream(0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                state.heads.append(head)
                reply = _replies(head)
                if reply is None:
                    break
                writer.write(reply)
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


async def _proxy(start_proxy: StartProxy, up: RawUpstream) -> RunningProxy:
    return await start_proxy(
        routes({"host": "raw.test", "guest": "raw", "port": up.port}),
        [snapshot_guest(120, "raw", (HOST,))],
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
