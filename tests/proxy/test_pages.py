"""The loading and error pages through a real HttpProxy: HTML for browsers, problem JSON for
everyone else, the route's look, the heartbeat of a silent wake, a swapped template."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pxproxy.config.pages import PagesConfig
from pxproxy.pages.document import Pages, parse_template
from pxproxy.proxy.loading_page import EVENTS_PATH
from pxproxy.shutdown import Stopping
from pxproxy.wake.contract import WakeError, WakeState

from ..support import wait_for
from .conftest import StartProxy, routes, snapshot_guest
from .test_waiting import FakeGate

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
ROUTES = routes(
    {
        "host": "wiki.test",
        "guest": "lab:7341",
        "port": 8080,
        "page": {"title": "Team wiki", "accent": "#0a7", "logo": "https://x.test/l.png"},
    },
    {"host": "lost.test", "guest": "lab:7342", "port": 8080},
    {"host": "gone.test", "guest": "lab:7343", "port": 8080},
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


GUESTS = [
    snapshot_guest(7341, "wiki", ("127.0.0.1",)),
    snapshot_guest(7342, "lost", ()),  # no address: 502
    snapshot_guest(7343, "gone", ("127.0.0.1",)),
]


async def get(
    client: aiohttp.ClientSession, url: str, host: str, accept: str, method: str = "GET"
) -> tuple[int, str, str]:
    headers = {"Host": host, "Accept": accept}
    async with client.request(method, url, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.text()


@pytest.mark.parametrize("theme", ["default", "midnight", "paper"])
async def test_404_is_a_page_for_browsers_and_a_problem_for_the_rest(
    start_proxy: StartProxy, client: aiohttp.ClientSession, theme: str
) -> None:
    px = await start_proxy(ROUTES, GUESTS, pages={"theme": theme})
    status, kind, page = await get(client, px.url + "/", "nowhere.test", BROWSER)
    assert (status, kind) == (404, "text/html")
    assert f'data-theme="{theme}"' in page
    assert '<h1 id="title">Not Found</h1>' in page
    assert "no route for host &#x27;nowhere.test&#x27;" in page
    status, kind, body = await get(client, px.url + "/", "nowhere.test", "application/json")
    assert (status, kind) == (404, "application/problem+json")
    assert "no route for host" in body


async def test_502_no_address_and_unreachable_guest_as_pages(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gone = routes({"host": "gone.test", "guest": "lab:7343", "port": closed_port()})
    px = await start_proxy((*ROUTES[:2], *gone), GUESTS)
    status, kind, page = await get(client, px.url + "/", "lost.test", BROWSER)
    assert (status, kind) == (502, "text/html")
    assert '<h1 id="title">Bad Gateway</h1>' in page
    assert "lab:7342" in page
    status, kind, page = await get(client, px.url + "/", "gone.test", BROWSER)
    assert (status, kind) == (502, "text/html")
    assert "cannot connect to guest lab:7343" in page
    status, kind, _ = await get(client, px.url + "/", "lost.test", "*/*")
    assert (status, kind) == (502, "application/problem+json")


async def test_503_failed_wake_and_stopping_as_pages(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    gate.fail(WakeError("lab:7341", "circuit open: " + EVIL, 30))
    stopping = Stopping()
    px = await start_proxy(ROUTES, GUESTS, {0: gate}, stopping=stopping)
    # A form's POST from a browser waits for the wake, which fails: a page in the route's look.
    status, kind, page = await get(client, px.url + "/", "wiki.test", BROWSER, "POST")
    assert (status, kind) == (503, "text/html")
    assert "--accent: #0a7;" in page
    assert "circuit open: &lt;script&gt;" in page
    assert "<img src=x" not in page
    status, kind, _ = await get(client, px.url + "/", "wiki.test", "application/json", "POST")
    assert (status, kind) == (503, "application/problem+json")
    stopping.set()
    status, kind, page = await get(client, px.url + "/", "wiki.test", BROWSER)
    assert (status, kind) == (503, "text/html")
    assert "pxproxy is stopping" in page


async def test_the_loading_page_shows_the_route_and_a_failure_truthfully(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    px = await start_proxy(ROUTES, GUESTS, {0: gate}, pages={"theme": "midnight"})
    status, kind, page = await get(client, px.url + "/", "wiki.test", BROWSER)
    assert (status, kind) == (503, "text/html")
    assert '<h1 id="title">Starting Team wiki</h1>' in page
    assert '<img class="logo" id="logo" src="https://x.test/l.png" alt="">' in page
    await wait_for(lambda: gate.ready_calls == [True], 5, "the background wake")
    gate.fail(WakeError("lab:7341", "TASK ERROR: no such volume", 30))
    _, _, page = await get(client, px.url + "/", "wiki.test", BROWSER)
    assert '<h1 id="title">Could not start Team wiki</h1>' in page
    assert "Starting Team wiki</h1>" not in page


async def test_a_silent_wake_gets_heartbeats(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    gate.set(WakeState.WAKING, "waiting for the port")
    px = await start_proxy(ROUTES, GUESTS, {0: gate})
    px.proxy.heartbeat_s = 0.05
    headers = {"Host": "wiki.test", "Accept": "text/event-stream"}
    lines: list[bytes] = []
    async with client.get(px.url + EVENTS_PATH, headers=headers) as resp:
        async with asyncio.timeout(5):
            async for line in resp.content:
                lines.append(line.strip())
                if lines.count(b"event: heartbeat") == 3:
                    break
        progress = [line for line in lines if line.startswith(b'data: {"state"')]
        assert len(progress) == 1  # the state once; only heartbeats while nothing changes
        assert b'"stage": "port"' in progress[0]
        gate.set(WakeState.READY, "ready")
        async with asyncio.timeout(5):
            rest = [line.strip() async for line in resp.content]
    assert any(b'"state": "ready"' in line for line in rest)


async def test_a_new_template_is_served_once_set(
    start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    px = await start_proxy(ROUTES, GUESTS)
    _, _, before = await get(client, px.url + "/", "nowhere.test", BROWSER)
    assert 'data-theme="default"' in before
    px.proxy.set_pages(
        Pages(theme="paper", template=parse_template("<p id='title'>$title @ $host</p>"))
    )
    _, _, after = await get(client, px.url + "/", "nowhere.test", BROWSER)
    assert after == "<p id='title'>Not Found @ nowhere.test</p>"
    assert PagesConfig().pages() == Pages()
