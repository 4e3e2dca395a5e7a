"""The proxy when pxproxy begins to stop, and what it refuses or hides before then: WebSockets
end with 1001, event streams end cleanly, held requests get a 503; a bad WebSocket handshake
never reaches the guest; error bodies name no internal address."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from pxproxy.inventory.model import Guest
from pxproxy.shutdown import Stopping

from ..support import wait_for
from .conftest import WIKI, Lab, StartProxy, lab_guests, routes, snapshot_guest
from .test_waiting import API, HTML, ROUTES, FakeGate

STOPPING = "pxproxy is stopping"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_websocket_gets_1001_both_ways_when_stopping(
    start_proxy: StartProxy, upstream_app, session: aiohttp.ClientSession
) -> None:
    guest_closes: list[int | None] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for _ in sock:
            pass
        guest_closes.append(sock.close_code)
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    port = await upstream_app(app)
    stopping = Stopping()
    px = await start_proxy(
        routes({"host": "ws.test", "guest": "wiki", "port": port}),
        [_wiki_at("127.0.0.1")],
        stopping=stopping,
    )
    async with session.ws_connect(px.url + "/ws", headers={"Host": "ws.test"}) as client_ws:
        await wait_for(lambda: px.metrics.open.get("ws.test") == 1, 5, "the relay")
        stopping.set()
        msg = await client_ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
    assert msg.extra == STOPPING
    await wait_for(lambda: guest_closes == [aiohttp.WSCloseCode.GOING_AWAY], 5, "the guest's close")


async def test_event_stream_ends_cleanly_and_a_download_runs_on_when_stopping(
    http_lab: Lab, start_proxy: StartProxy, session: aiohttp.ClientSession
) -> None:
    stopping = Stopping()
    px = await start_proxy(ROUTES, lab_guests(http_lab), stopping=stopping)
    async with (
        session.get(px.url + "/sse", headers={"Host": "wiki.test"}) as sse,
        session.get(px.url + "/big?bytes=4000000", headers={"Host": "wiki.test"}) as big,
    ):
        assert sse.status == big.status == 200
        assert (await sse.content.readline()).startswith(b"data:")
        stopping.set()
        # A cut body would raise ClientPayloadError; an ended one reads to EOF.
        await asyncio.wait_for(sse.read(), 5)
        # Any other body is not cut short: it runs on through the grace period.
        assert len(await asyncio.wait_for(big.read(), 10)) == 4_000_000


async def test_request_held_for_a_wake_gets_503_when_stopping(
    http_lab: Lab, start_proxy: StartProxy, session: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    stopping = Stopping()
    px = await start_proxy(ROUTES, lab_guests(http_lab), {0: gate}, stopping=stopping)
    held = asyncio.create_task(session.get(px.url + "/", headers=API))
    await wait_for(lambda: gate.ready_calls == [True], 5, "the request to be held")
    stopping.set()
    resp = await asyncio.wait_for(held, 5)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.headers["Connection"] == "close"
    assert STOPPING in (await resp.json())["detail"]
    # Once stopping, a browser gets the same as a page instead of a loading page (and no wake
    # begins).
    async with session.get(px.url + "/", headers=HTML) as page:
        assert (page.status, page.content_type) == (503, "text/html")
        assert STOPPING in await page.text()
    assert gate.ready_calls == [True]


async def test_loading_page_events_end_when_stopping(
    http_lab: Lab, start_proxy: StartProxy, session: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    stopping = Stopping()
    px = await start_proxy(ROUTES, lab_guests(http_lab), {0: gate}, stopping=stopping)
    async with session.get(px.url + "/.pxproxy/wake/events", headers=HTML) as resp:
        assert resp.status == 200
        assert (await resp.content.readline()).startswith(b"retry:")
        stopping.set()
        await asyncio.wait_for(resp.read(), 5)


def _wiki_at(ip: str) -> Guest:
    return snapshot_guest(WIKI, "wiki", (ip,))


def _handshake(**override: str) -> dict[str, str]:
    headers = {
        "Host": "ws.test",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    }
    headers.update(override)
    return {k: v for k, v in headers.items() if v}


@pytest.mark.parametrize(
    ("override", "status"),
    [
        ({"Sec-WebSocket-Key": ""}, 400),
        ({"Sec-WebSocket-Key": "not base64!"}, 400),
        ({"Sec-WebSocket-Key": base64.b64encode(b"short").decode()}, 400),
        ({"Sec-WebSocket-Version": ""}, 426),
        ({"Sec-WebSocket-Version": "8"}, 426),
    ],
)
async def test_bad_websocket_handshake_is_refused_before_the_guest_is_asked(
    start_proxy: StartProxy,
    upstream_app,
    session: aiohttp.ClientSession,
    override: dict[str, str],
    status: int,
) -> None:
    asked = 0

    async def ws(request: web.Request) -> web.StreamResponse:
        nonlocal asked
        asked += 1
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    port = await upstream_app(app)
    px = await start_proxy(
        routes({"host": "ws.test", "guest": "wiki", "port": port}), [_wiki_at("127.0.0.1")]
    )
    async with session.get(px.url + "/ws", headers=_handshake(**override)) as resp:
        assert resp.status == status
        if status == 426:
            assert resp.headers["Sec-WebSocket-Version"] == "13"
    # The same handshake done right reaches the guest: the counter can move.
    async with session.ws_connect(px.url + "/ws", headers={"Host": "ws.test"}) as good:
        await good.receive(timeout=5)
    assert asked == 1


async def test_502_body_names_the_guest_not_its_address(
    http_lab: Lab,
    start_proxy: StartProxy,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ip = http_lab.guest(WIKI).ip
    px = await start_proxy(
        routes({"host": "closed.test", "guest": "wiki", "port": 9}), lab_guests(http_lab)
    )
    with caplog.at_level(logging.INFO, logger="pxproxy.proxy"):
        async with session.get(px.url + "/", headers={"Host": "closed.test"}) as resp:
            body = await resp.text()
    assert resp.status == 502
    assert f"cannot connect to guest lab:{WIKI} (wiki)" in body
    assert ip not in body
    assert "Errno" not in body
    assert "Connect call failed" not in body
    # The operator still learns where and why.
    assert f"{ip}:9" in caplog.text
