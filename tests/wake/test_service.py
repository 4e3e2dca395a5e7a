"""The one power path, against the lab: the API's power actions go through idle-watch's waker,
so idle-watch knows at once what the API did, and the API joins a wake in flight."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.wake.contract import WakeState

from ..support import lab_cluster, wait_for

TOKEN = "power-path-secret-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# vmids 9771..9779: used by no other test (the lab derives guest addresses from vmids).
BOOTING = 9771  # an LXC that boots slowly, woken by a request
PAUSABLE = 9772  # a running QEMU VM, suspended through the API


def config(lab: LabServer, guest: int) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "power"]}]},
            "routes": [
                {
                    "host": "svc.test",
                    "guest": f"lab:{guest}",
                    "port": 8080,
                    "idle": {"timeout": "1h", "stop_method": "stop", "wake_timeout": "30s"},
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def daemon(lab: LabServer, guest: int) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    d = Daemon(config(lab, guest))
    await d.start()
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{d.api_port}", timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            yield d, session
    finally:
        await d.stop()


async def post(session: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, Any]]:
    async with session.post(path, headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def route_state(session: aiohttp.ClientSession) -> str:
    async with session.get("/api/v1/routes", headers=AUTH) as resp:
        return str((await resp.json())[0]["state"])


def task_types(lab: LabServer, vmid: int) -> list[str]:
    return [t.type for t in lab.tasks if t.id == str(vmid)]


async def test_an_api_start_of_a_waking_guest_joins_the_wake(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(BOOTING, "lxc", "booting", "pve1", boot_time_s=1.0)
    await lab_server.cluster.open()
    async with daemon(lab_server, BOOTING) as (d, session):
        gate = d.wake.gate_for(0)
        # A request wakes the guest (what the proxy does), and its start task is sent.
        request = asyncio.create_task(gate.ready())
        await wait_for(lambda: task_types(lab_server, BOOTING) == ["vzstart"], 10, "the start")
        assert await route_state(session) == "waking"  # the API sees the wake state

        status, body = await post(session, f"/api/v1/guests/lab:{BOOTING}/start")
        assert status == 202, body
        # The wake's own start: its UPID, and no second start task.
        assert body["upid"] == lab_server.tasks[0].upid
        status, body = await post(session, f"/api/v1/guests/lab:{BOOTING}/start?wait=1")
        assert (status, body["exitstatus"]) == (200, "OK")
        await request
        assert gate.state is WakeState.READY
    assert task_types(lab_server, BOOTING) == ["vzstart"]


async def test_an_api_stop_during_a_wake_is_refused_and_the_wake_goes_on(
    lab_server: LabServer,
) -> None:
    lab_server.cluster.add_guest(BOOTING + 3, "lxc", "busy", "pve1", boot_time_s=1.0)
    await lab_server.cluster.open()
    async with daemon(lab_server, BOOTING + 3) as (d, session):
        gate = d.wake.gate_for(0)
        request = asyncio.create_task(gate.ready())
        await wait_for(lambda: task_types(lab_server, BOOTING + 3) == ["vzstart"], 10, "the start")
        status, body = await post(session, f"/api/v1/guests/lab:{BOOTING + 3}/stop")
        assert status == 409
        assert "waking is in flight" in body["detail"]
        await asyncio.wait_for(request, 15)  # the wake was not disturbed
        assert await route_state(session) == "ready"
    assert task_types(lab_server, BOOTING + 3) == ["vzstart"]


async def test_an_api_start_wakes_through_the_waker(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(BOOTING, "lxc", "booting", "pve1", boot_time_s=0.2)
    await lab_server.cluster.open()
    async with daemon(lab_server, BOOTING) as (d, session):
        await wait_for(lambda: bool(d.inventory.snapshot.guests), 10, "the first poll")
        status, body = await post(session, f"/api/v1/guests/lab:{BOOTING}/start")
        assert status == 202, body
        # Idle-watch knows at once: the start is its wake, not a change seen later.
        assert d.wake.gate_for(0).state is WakeState.WAKING
        await wait_for(lambda: d.wake.gate_for(0).state is WakeState.READY, 10, "ready")
        assert d.wake.stats.wakes_ok == 1
    assert task_types(lab_server, BOOTING) == ["vzstart"]


async def test_an_api_suspend_then_a_request_resumes(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(PAUSABLE, "qemu", "pausable", "pve1", status="running")
    await lab_server.cluster.open()
    async with daemon(lab_server, PAUSABLE) as (d, session):
        gate = d.wake.gate_for(0)
        await wait_for(lambda: gate.state is WakeState.READY, 10, "the running VM to be ready")

        status, body = await post(session, f"/api/v1/guests/lab:{PAUSABLE}/suspend?wait=1")
        assert (status, body["exitstatus"]) == (200, "OK"), body
        assert lab_server.cluster.guests[PAUSABLE].paused
        # /cluster/resources still says running; idle-watch knows how the VM sleeps.
        assert await route_state(session) == "asleep"

        await gate.ready()  # the next request
        assert not lab_server.cluster.guests[PAUSABLE].paused
        assert gate.state is WakeState.READY
    assert task_types(lab_server, PAUSABLE) == ["qmsuspend", "qmresume"]
