"""What clients meet while a guest sleeps, with a scripted gate in front of a real lab guest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from pxproxy.proxy.loading_page import EVENTS_PATH
from pxproxy.wake.contract import WakeError, WakeProgress, WakeState, WakeTimeout

from ..support import wait_for
from .conftest import WIKI, Lab, RunningProxy, StartProxy, lab_guests, routes

ROUTES = routes({"host": "wiki.test", "guest": "wiki", "port": 8080})
HTML = {"Host": "wiki.test", "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
API = {"Host": "wiki.test", "Accept": "application/json"}


class FakeGate:
    """A gate the test drives: asleep until told otherwise; records every call."""

    def __init__(self, state: WakeState = WakeState.ASLEEP) -> None:
        self._progress = WakeProgress(state, "asleep" if state is WakeState.ASLEEP else "ready")
        self._changed = asyncio.Event()
        self.wake_timeout_s = 5.0
        self.ready_calls: list[bool] = []
        self.activities = 0
        self.holding = 0
        self.failure: WakeError | None = None

    @property
    def state(self) -> WakeState:
        return self._progress.state

    def set(self, state: WakeState, step: str, error: str | None = None) -> None:
        self._progress = WakeProgress(state, step, error)
        self._changed.set()
        self._changed = asyncio.Event()

    def fail(self, failure: WakeError) -> None:
        self.failure = failure
        self.set(WakeState.FAILED, failure.message, failure.message)

    async def ready(self, *, wake: bool = True) -> None:
        self.ready_calls.append(wake)
        if self.state is WakeState.READY:
            return
        if not wake and self.state is WakeState.ASLEEP:
            raise WakeError("wiki", "guest wiki is asleep", 30)
        if self.state is WakeState.ASLEEP:
            self.set(WakeState.WAKING, "starting")
        while not self._is_ready():
            if self.failure is not None:
                raise self.failure
            await self._changed.wait()

    def _is_ready(self) -> bool:
        return self._progress.state is WakeState.READY

    def activity(self) -> None:
        self.activities += 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.holding += 1
        try:
            yield
        finally:
            self.holding -= 1

    async def progress(self) -> AsyncIterator[WakeProgress]:
        seen = self._progress
        yield seen
        while seen.state not in (WakeState.READY, WakeState.FAILED):
            await self._changed.wait()
            seen = self._progress
            yield seen


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start(start_proxy: StartProxy, http_lab: Lab, gate: FakeGate) -> RunningProxy:
    return await start_proxy(ROUTES, lab_guests(http_lab), {0: gate})


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, object]]:
    async with asyncio.timeout(5):
        async for line in resp.content:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])


async def test_browser_gets_loading_page_at_once_then_follows_wake_to_ready(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    px = await start(start_proxy, http_lab, gate)
    async with client.get(px.url + "/some/page", headers=HTML) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "5"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "Starting wiki" in page
    assert EVENTS_PATH in page
    assert "location.reload()" in page
    assert "<link" not in page  # no external assets
    assert set(re.findall(r'src="([^"]*)"', page)) == {""}  # the logo's, none set
    # The wake runs in the background: exactly one, for any number of page loads.
    await wait_for(lambda: gate.ready_calls == [True], 5, "the background wake")
    async with client.get(px.url + "/", headers=HTML) as resp:
        assert resp.status == 503
    assert gate.ready_calls == [True]

    async with client.get(px.url + EVENTS_PATH, headers=HTML) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        stream = events(resp)
        assert await anext(stream) == {
            "state": "waking",
            "step": "starting",
            "error": None,
            "stage": "starting",
            "elapsed": None,
        }
        gate.set(WakeState.WAKING, "waiting for the port")
        assert (await anext(stream))["step"] == "waiting for the port"
        gate.set(WakeState.READY, "ready")
        assert (await anext(stream))["state"] == "ready"
        with pytest.raises(StopAsyncIteration):
            await anext(stream)  # the stream ends at ready
    # The page's reload now reaches the guest.
    async with client.get(px.url + "/", headers=HTML) as resp:
        assert (resp.status, await resp.text()) == (200, f"wiki (vmid {WIKI})\n")


async def test_failed_wake_shows_the_proxmox_error(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    px = await start(start_proxy, http_lab, gate)
    async with client.get(px.url + "/", headers=HTML) as resp:
        assert resp.status == 503
    await wait_for(lambda: gate.ready_calls == [True], 5, "the background wake")
    async with client.get(px.url + EVENTS_PATH, headers=HTML) as resp:
        stream = events(resp)
        assert (await anext(stream))["state"] == "waking"
        gate.fail(WakeError("wiki", "TASK ERROR: volume 'local:vm-101-disk-0' missing", 30))
        failed = await anext(stream)
    assert failed["state"] == "failed"
    assert failed["error"] == "TASK ERROR: volume 'local:vm-101-disk-0' missing"
    # A later page load renders the failed state and still subscribes for the error text.
    async with client.get(px.url + "/", headers=HTML) as resp:
        page = await resp.text()
    assert '"state": "failed"' in page
    assert "Could not start wiki" in page


async def test_api_client_is_held_then_forwarded(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    px = await start(start_proxy, http_lab, gate)

    async def call() -> tuple[int, str]:
        async with client.get(px.url + "/", headers=API) as resp:
            return resp.status, await resp.text()

    held = asyncio.create_task(call())
    await wait_for(lambda: gate.ready_calls == [True], 5, "the request to wait on the gate")
    assert not held.done()
    gate.set(WakeState.READY, "ready")
    async with asyncio.timeout(5):
        assert await held == (200, f"wiki (vmid {WIKI})\n")
    assert gate.activities >= 1
    assert gate.holding == 0


async def test_held_past_wake_timeout_is_503_problem(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    gate.failure = WakeTimeout("wiki", "wiki was not ready within 120s", 12.5)
    px = await start(start_proxy, http_lab, gate)
    async with client.post(px.url + "/echo", data=b"x", headers=API) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "13"
        assert resp.content_type == "application/problem+json"
        body = await resp.json(content_type=None)
    assert body["status"] == 503
    assert body["guest"] == "wiki"
    assert body["error"] == "wake_timeout"
    assert body["detail"] == "wiki was not ready within 120s"


async def test_health_checks_never_wake_and_never_count(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate()
    px = await start_proxy(
        ROUTES,
        lab_guests(http_lab),
        {0: gate},
        health_checks={"paths": ["/healthz", "/status/*"], "sources": ["127.0.0.0/8"]},
    )
    probe = {"Host": "wiki.test", "User-Agent": "Uptime-Kuma/1.23", "Accept": "text/html"}
    async with client.get(px.url + "/", headers=probe) as resp:
        assert resp.status == 503
        assert "health checks do not wake" in (await resp.json(content_type=None))["detail"]
    assert gate.ready_calls == [False]
    assert gate.state is WakeState.ASLEEP

    gate.set(WakeState.READY, "ready")
    async with client.get(px.url + "/healthz", headers={"Host": "wiki.test"}) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    assert gate.activities == 0
    assert True not in gate.ready_calls


async def test_pxproxy_paths_are_never_forwarded(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate(WakeState.READY)
    px = await start(start_proxy, http_lab, gate)
    async with client.get(px.url + "/.pxproxy/anything", headers=API) as resp:
        assert resp.status == 404
        assert "no pxproxy endpoint /.pxproxy/anything" in await resp.text()
    async with client.get(px.url + EVENTS_PATH, headers=API) as resp:
        assert [e async for e in events(resp)] == [
            {"state": "ready", "step": "ready", "error": None, "stage": "ready", "elapsed": None}
        ]
    assert gate.activities == 0


async def test_open_stream_holds_the_gate_and_reports_activity(
    http_lab: Lab, start_proxy: StartProxy, client: aiohttp.ClientSession
) -> None:
    gate = FakeGate(WakeState.READY)
    px = await start(start_proxy, http_lab, gate)
    async with client.get(px.url + "/sse", headers=API) as resp:
        await resp.content.readline()
        assert gate.holding == 1
        await wait_for(lambda: gate.activities >= 2, 5, "activity from the stream")
    await wait_for(lambda: gate.holding == 0, 5, "the hold to end with the stream")
    async with client.ws_connect(px.url + "/ws", headers={"Host": "wiki.test"}) as ws:
        assert gate.holding == 1
        before = gate.activities
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "hi"
        await wait_for(lambda: gate.activities > before, 5, "activity from messages")
    await wait_for(lambda: gate.holding == 0, 5, "the hold to end with the socket")
