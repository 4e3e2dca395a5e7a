"""Guests started and stopped through the lab's Proxmox API serve real traffic only while up."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient

from ..support import wait_for


def client_for(server: LabServer) -> PveClient:
    return PveClient(
        ClusterConfig.model_validate(
            {
                "url": server.url,
                "token_id": server.credentials.token_id,
                "secret": server.credentials.token_secret,
                "tls": {"fingerprint": server.fingerprint},
            }
        )
    )


async def fetch(url: str) -> str | None:
    """The body, or None when the connection is refused or reset."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return await resp.text()
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None


async def test_start_opens_ports_after_boot_time_and_stop_closes_them(
    lab_server: LabServer,
) -> None:
    guest = lab_server.cluster.add_guest(101, "lxc", "wiki", "pve1", boot_time_s=0.5)
    url = f"http://{guest.ip}:8080/"
    async with client_for(lab_server) as client:
        assert await fetch(url) is None
        upid = await client.guest_action("lxc", "pve1", 101, "start")
        # Booting: the task runs and nothing listens yet.
        status = await client.task_status(upid)
        assert status.running
        assert await fetch(url) is None
        done = await client.wait_task(upid, timeout_s=10)
        assert done.ok
        assert await fetch(url) == "wiki (vmid 101)\n"
        upid = await client.guest_action("lxc", "pve1", 101, "stop")
        assert (await client.wait_task(upid, timeout_s=10)).ok
    assert await fetch(url) is None
    assert lab_server.cluster.history(101) == ["stopped", "starting", "running", "stopped"]


async def test_failed_start_never_opens(lab_server: LabServer) -> None:
    guest = lab_server.cluster.add_guest(
        102, "qemu", "broken", "pve1", boot_time_s=0.1, fail_start="start failed: no disk"
    )
    async with client_for(lab_server) as client:
        upid = await client.guest_action("qemu", "pve1", 102, "start")
        status = await client.wait_task(upid, timeout_s=10)
    assert not status.ok
    assert status.exitstatus == "start failed: no disk"
    assert await fetch(f"http://{guest.ip}:8080/") is None


async def test_pause_closes_and_resume_reopens(lab_server: LabServer) -> None:
    guest = lab_server.cluster.add_guest(103, "qemu", "game", "pve1", status="running")
    await lab_server.cluster.open()
    url = f"http://{guest.ip}:8080/healthz"
    async with client_for(lab_server) as client:
        assert await fetch(url) == "ok"
        await client.wait_task(await client.guest_action("qemu", "pve1", 103, "suspend"), 10)
        assert (await client.guest_status("qemu", "pve1", 103)).qmpstatus == "paused"
        assert await fetch(url) is None
        await client.wait_task(await client.guest_action("qemu", "pve1", 103, "resume"), 10)

        async def serving() -> bool:
            return await fetch(url) == "ok"

        await wait_for(serving, 5, "the resumed VM to serve again")


async def test_netin_counts_real_bytes(lab_server: LabServer) -> None:
    guest = lab_server.cluster.add_guest(104, "lxc", "web", "pve1", status="running")
    await lab_server.cluster.open()
    before = guest.netin
    body = await fetch(f"http://{guest.ip}:8080/big?bytes=100000")
    assert body is not None
    assert len(body) == 100000
    assert guest.netout >= 100000
    assert guest.netin > before
    async with client_for(lab_server) as client:
        status = await client.guest_status("lxc", "pve1", 104)
    assert status.netout >= 100000


@pytest.mark.parametrize("action", ["shutdown", "stop"])
async def test_stopped_guest_refuses(lab_server: LabServer, action: str) -> None:
    guest = lab_server.cluster.add_guest(
        105, "lxc", "db", "pve1", status="running", shutdown_time_s=0.05
    )
    await lab_server.cluster.open()
    async with client_for(lab_server) as client:
        upid = await client.guest_action("lxc", "pve1", 105, action)
        assert (await client.wait_task(upid, 10)).ok
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(guest.ip, 8080)
