"""`POST /api/v1/guests/{ref}/wake` over a scripted gate: the NDJSON stages, the last line's
outcome, the refusals (scope, allowlist, no idle route, no idle-watch), the audit; and
the 404 that names the right node for a node/vmid ref on the wrong one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.config.loader import parse_config
from pxproxy.config.models import RouteConfig
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.wake.contract import Gate, WakeError, WakeProgress, WakeState

from ..builders import make_guest, make_node

OPS = "wake-ops-secret-0123456"
READER = "wake-reader-secret-0123"
NARROW = "wake-narrow-secret-0123"
SLEEPY = make_guest(7951, "sleepy", status="stopped")
PLAIN = make_guest(7952, "plain", node="pve2")

Client = TestClient[Any, Any]


class ScriptedGate:
    """A gate whose wake walks through `steps`, each released by the test, then succeeds or
    raises `failure`. Counts its wakes."""

    def __init__(self, steps: list[str], failure: WakeError | None = None) -> None:
        self._progress = WakeProgress(WakeState.ASLEEP, "asleep")
        self._steps = steps
        self._failure = failure
        self._queues: set[asyncio.Queue[WakeProgress]] = set()
        self._task: asyncio.Task[None] | None = None
        self.release = asyncio.Event()
        self.wakes = 0
        self.wake_timeout_s = 60.0

    @property
    def state(self) -> WakeState:
        return self._progress.state

    def _set(self, state: WakeState, step: str, error: str | None = None) -> None:
        self._progress = WakeProgress(state, step, error)
        for queue in self._queues:
            queue.put_nowait(self._progress)

    async def _wake(self) -> None:
        for i, step in enumerate(self._steps):
            if i:
                self._set(WakeState.WAKING, step)
            await self.release.wait()
            self.release.clear()
        if self._failure is not None:
            self._set(WakeState.FAILED, self._failure.message, self._failure.message)
            raise self._failure
        self._set(WakeState.READY, "ready")

    async def ready(self, *, wake: bool = True) -> None:
        if self.state is WakeState.READY:
            return
        if self._task is None:
            self.wakes += 1
            # As the waker does: waking from the call on, before the first await.
            self._set(WakeState.WAKING, self._steps[0])
            self._task = asyncio.create_task(self._wake())
        await asyncio.shield(self._task)

    def activity(self) -> None:
        return None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        yield

    async def progress(self) -> AsyncIterator[WakeProgress]:
        queue: asyncio.Queue[WakeProgress] = asyncio.Queue()
        self._queues.add(queue)
        try:
            item = self._progress
            while True:
                yield item
                if item.state in (WakeState.READY, WakeState.FAILED):
                    return
                item = await queue.get()
        finally:
            self._queues.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


def _config() -> Any:
    return parse_config(
        textwrap.dedent(
            f"""
            proxmox:
              - {{name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}}
            api:
              tokens:
                - {{name: ops, secret: {OPS}, scopes: [read, power]}}
                - {{name: reader, secret: {READER}, scopes: [read]}}
                - {{name: narrow, secret: {NARROW}, scopes: [power], guests: [plain]}}
            routes:
              - {{host: plain.test, guest: plain, port: 80}}
              - {{host: sleepy.test, guest: sleepy, port: 80, idle: {{timeout: 10m}}}}
            """
        ),
        env={},
    )


class _Wake:
    """Idle-watch as the API sees it: one gate for every route, the indexes asked for."""

    def __init__(self, gate: Gate, asked: list[int], routes: tuple[RouteConfig, ...]) -> None:
        self._gate = gate
        self._asked = asked
        self._routes = routes

    def states(self) -> list[tuple[int, WakeState]]:
        return []

    def gate_for(self, route: RouteConfig | int) -> Gate:
        self._asked.append(route if isinstance(route, int) else self._routes.index(route))
        return self._gate


async def _client(
    aiohttp_client: AiohttpClient, gate: Gate | None
) -> tuple[Client, Any, list[int]]:
    config = _config()
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build("home", [SLEEPY, PLAIN], (make_node("pve"), make_node("pve2")))
    )
    asked: list[int] = []
    wake = _Wake(gate, asked, config.routes) if gate is not None else None
    ctx = make_context(config, inventory, Metrics(), True, wake=wake)
    return await aiohttp_client(build_app(ctx)), ctx, asked


def auth(secret: str = OPS) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _lines(resp: Any) -> AsyncIterator[dict[str, Any]]:
    while line := await resp.content.readline():
        yield json.loads(line)


async def test_wake_streams_each_stage_then_ready(aiohttp_client: AiohttpClient) -> None:
    gate = ScriptedGate(["starting", "waiting for the port"])
    client, ctx, asked = await _client(aiohttp_client, gate)
    async with client.post("/api/v1/guests/sleepy/wake", headers=auth()) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        seen: list[dict[str, Any]] = []
        async for line in _lines(resp):
            seen.append(line)
            if line["state"] == "waking":
                gate.release.set()  # the next stage only once this one was streamed
    assert [(x["state"], x["step"]) for x in seen] == [
        ("waking", "starting"),
        ("waking", "waiting for the port"),
        ("ready", "ready"),
    ]
    assert seen[-1]["already_ready"] is False
    assert all(isinstance(x["elapsed_s"], float) for x in seen)
    assert asked == [1]  # the guest's idle route, not the plain one
    assert gate.wakes == 1
    (record,) = ctx.audit.records
    assert (record.token, record.action, record.guest, record.result) == (
        "ops",
        "wake",
        "home:7951",
        "ok",
    )

    # Awake already: one line, nothing started.
    async with client.post("/api/v1/guests/home:7951/wake", headers=auth()) as resp:
        lines = [x async for x in _lines(resp)]
    assert [(x["state"], x["already_ready"]) for x in lines] == [("ready", True)]
    assert gate.wakes == 1
    assert ctx.audit.records[-1].result == "already ready"
    await gate.close()


async def test_a_failed_wake_ends_with_its_error(aiohttp_client: AiohttpClient) -> None:
    gate = ScriptedGate(["starting"], WakeError("home:7951", "CT 7951 is locked (backup)", 30))
    client, ctx, _ = await _client(aiohttp_client, gate)
    gate.release.set()
    async with client.post("/api/v1/guests/sleepy/wake", headers=auth()) as resp:
        assert resp.status == 200
        lines = [x async for x in _lines(resp)]
    assert lines[-1]["state"] == "failed"
    assert lines[-1]["error"] == "CT 7951 is locked (backup)"
    assert lines[-1]["retry_after_s"] == 30
    assert ctx.audit.records[-1].result == "failed: CT 7951 is locked (backup)"
    await gate.close()


async def test_wake_refusals(aiohttp_client: AiohttpClient) -> None:
    gate = ScriptedGate(["starting"])
    client, ctx, _ = await _client(aiohttp_client, gate)

    async def problem(path: str, secret: str, status: int) -> str:
        async with client.post(path, headers=auth(secret)) as resp:
            assert resp.status == status, await resp.text()
            detail: str = (await resp.json(content_type=None))["detail"]
            return detail

    assert "lacks the 'power' scope" in await problem("/api/v1/guests/sleepy/wake", READER, 403)
    assert "may not act on guest home:7951" in await problem(
        "/api/v1/guests/sleepy/wake", NARROW, 403
    )
    assert ctx.audit.records[-1].result.startswith("denied: ")
    detail = await problem("/api/v1/guests/plain/wake", OPS, 409)
    assert detail.startswith("guest home:7952 (plain) has no route with idle: settings")
    assert "no guest matches ref 'nope'" in await problem("/api/v1/guests/nope/wake", OPS, 404)
    assert "wake takes none" in await problem("/api/v1/guests/sleepy/wake?x=1", OPS, 400)
    assert gate.wakes == 0
    # Every refusal is audited: scope, allowlist, the unknown ref, the stray query parameter.
    results = [(r.action, r.result.split(":", 1)[0]) for r in ctx.audit.records]
    assert ("wake", "denied") in results
    assert results[-2:] == [("wake", "rejected"), ("wake", "rejected")]
    assert [r.action for r in ctx.audit.records if "scope" in r.result] == ["wake"]


async def test_wake_without_idle_watch_is_503(aiohttp_client: AiohttpClient) -> None:
    client, _, _ = await _client(aiohttp_client, None)
    async with client.post("/api/v1/guests/sleepy/wake", headers=auth()) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert "idle-watch does not run" in (await resp.json(content_type=None))["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/guests/pve/7952"),
        ("POST", "/api/v1/guests/pve/7952/start"),
        ("POST", "/api/v1/guests/pve/7952/wake"),
        ("GET", "/stats/pve/7952"),
    ],
)
async def test_wrong_node_names_the_right_one(
    aiohttp_client: AiohttpClient, method: str, path: str
) -> None:
    client, _, _ = await _client(aiohttp_client, None)
    async with client.request(method, path, headers=auth()) as resp:
        assert resp.status == 404
        body = await resp.json(content_type=None)
    assert body["detail"] == "guest 7952 is on node pve2, not pve"
    assert body["nodes"] == [{"cluster": "home", "node": "pve2", "ref": "home:7952"}]
