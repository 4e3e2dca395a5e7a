"""The daemon routing real traffic to lab guests and idling them: every piece together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for

TOKEN = "routing-test-token-0123"


def config(lab: LabServer, routes: list[dict[str, Any]]) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "t", "secret": TOKEN}]},
            "routes": routes,
        }
    )


@contextlib.asynccontextmanager
async def daemon(lab: LabServer, routes: list[dict[str, Any]]) -> AsyncIterator[Daemon]:
    d = Daemon(config(lab, routes))
    await d.start()
    try:
        # The daemon routes at once; these tests want the first poll's addresses.
        await wait_for(lambda: all(p.first_cycle.is_set() for p in d.pollers), 10, "a poll")
        yield d
    finally:
        await d.stop()


async def get(
    d: Daemon, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(
            f"http://127.0.0.1:{d.proxy_port}{path}", headers={"Host": host, **(headers or {})}
        ) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


def starts(lab: LabServer, vmid: int) -> int:
    return sum(1 for t in lab.tasks if t.id == str(vmid) and t.type.endswith("start"))


IDLE = {"timeout": "600ms", "wake_timeout": "10s", "shutdown_timeout": "2s"}


async def test_200_concurrent_requests_cause_one_start(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(101, "lxc", "wiki", "pve1", boot_time_s=0.3, static_ip=True)
    routes = [{"host": "wiki.test", "guest": "wiki", "port": 8080, "idle": IDLE}]
    async with daemon(lab_server, routes) as d:
        results = await asyncio.gather(*(get(d, "wiki.test") for _ in range(200)))
    assert {(status, body) for status, body, _ in results} == {(200, "wiki (vmid 101)\n")}
    assert starts(lab_server, 101) == 1


async def test_open_websocket_keeps_guest_awake_then_idle_stop(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(
        102, "lxc", "chat", "pve1", status="running", static_ip=True, shutdown_time_s=0.05
    )
    await lab_server.cluster.open()
    routes = [{"host": "chat.test", "guest": 102, "port": 8080, "idle": IDLE}]
    async with daemon(lab_server, routes) as d, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{d.proxy_port}/ws"
        async with session.ws_connect(url, headers={"Host": "chat.test"}) as ws:
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
            # Idle checks run about once a second: three of them, well past the 0.6 s idle
            # timeout, found the silent socket holding the guest, and none stopped it.
            assert d.wake is not None
            waker = next(w for w in d.wake.wakers if w.idle is not None)
            await wait_for(lambda: waker.busy_checks >= 3, 10, "three idle checks")
            assert lab_server.cluster.guests[102].status == "running"
            assert lab_server.tasks == []
            await ws.send_str("still here")
            assert (await ws.receive()).data == "still here"
        await wait_for(
            lambda: lab_server.cluster.guests[102].status == "stopped", 10, "the idle stop"
        )
    assert [t.type for t in lab_server.tasks] == ["vzshutdown"]


async def test_health_checks_never_wake(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(103, "lxc", "app", "pve1", static_ip=True)
    routes = [{"host": "app.test", "guest": "app", "port": 8080, "idle": IDLE}]
    async with daemon(lab_server, routes) as d:
        status, _, _ = await get(d, "app.test", headers={"User-Agent": "Uptime-Kuma/1.23"})
        assert status == 503
        assert starts(lab_server, 103) == 0
        status, body, _ = await get(d, "app.test")
        assert (status, body) == (200, "app (vmid 103)\n")


async def test_failed_start_shows_error_and_opens_circuit(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(
        104,
        "lxc",
        "broken",
        "pve1",
        static_ip=True,
        boot_time_s=0.05,
        fail_start="startup for container '104' failed",
    )
    routes = [
        {
            "host": "broken.test",
            "guest": "broken",
            "port": 8080,
            "idle": {**IDLE, "retry_after": "30s"},
        }
    ]
    async with daemon(lab_server, routes) as d:
        status, body, headers = await get(d, "broken.test", headers={"Accept": "application/json"})
        assert status == 503
        assert "startup for container '104' failed" in body
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "Retry-After" in headers
        # The circuit is open: a browser gets the error at once, no second start.
        status, page, _ = await get(d, "broken.test", headers={"Accept": "text/html"})
        assert status == 503
        assert starts(lab_server, 104) == 1
        assert "<html" in page.lower()


async def test_guest_stopped_externally_is_woken_again(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(
        105, "lxc", "git", "pve1", status="running", static_ip=True, boot_time_s=0.2
    )
    await lab_server.cluster.open()
    routes = [{"host": "git.test", "guest": "git", "port": 8080, "idle": {**IDLE, "timeout": "1h"}}]
    async with daemon(lab_server, routes) as d:
        assert (await get(d, "git.test"))[0] == 200
        await lab_server.cluster.stop(105).wait()  # as if from the Proxmox UI

        async def asleep() -> bool:
            states = dict(d.wake.states())
            return str(states.get(0)) == "asleep"

        await wait_for(asleep, 10, "idle-watch to notice the external stop")
        status, body, _ = await get(d, "git.test")
    assert (status, body) == (200, "git (vmid 105)\n")
    assert starts(lab_server, 105) == 1


async def test_routes_and_metrics_in_the_api(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(106, "lxc", "web", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    routes = [{"host": ["web.test", "*.web.test"], "guest": "web", "port": 8080}]
    async with daemon(lab_server, routes) as d:
        assert (await get(d, "www.web.test"))[0] == 200
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{d.api_port}/api/v1/routes", headers=auth
            ) as r:
                listed = await r.json()
            async with session.get(f"http://127.0.0.1:{d.api_port}/metrics", headers=auth) as r:
                metrics = await r.text()
    assert listed[0]["state"] == "ready"
    assert listed[0]["host"] == ["web.test", "*.web.test"]
    assert 'pxproxy_proxy_requests_total{route="web.test",status="200"} 1.0' in metrics
    assert "pxproxy_upstream_seconds_bucket" in metrics


@pytest.mark.parametrize("method", ["stop", "suspend", "hibernate"])
async def test_stop_methods_through_the_daemon(lab_server: LabServer, method: str) -> None:
    lab_server.cluster.add_guest(
        200, "qemu", "vm", "pve1", status="running", agent=True, static_ip=True, boot_time_s=0.1
    )
    await lab_server.cluster.open()
    routes = [
        {"host": "vm.test", "guest": "vm", "port": 8080, "idle": {**IDLE, "stop_method": method}}
    ]
    async with daemon(lab_server, routes) as d:
        assert (await get(d, "vm.test"))[0] == 200
        guest = lab_server.cluster.guests[200]
        await wait_for(lambda: not guest.serving, 10, f"the idle {method}")
        status, body, _ = await get(d, "vm.test")
    assert (status, body) == (200, "vm (vmid 200)\n")
    kinds = [t.type for t in lab_server.tasks]
    expected = {
        "stop": ["qmstop", "qmstart"],
        "suspend": ["qmsuspend", "qmresume"],
        "hibernate": ["qmsuspend", "qmstart"],
    }[method]
    assert kinds == expected
