"""The lab's guest netin/netout, as /cluster/resources and status/current report them: real
cumulative byte counters of the guest's own servers, reset when the guest restarts (a new
process, as in PVE) and 0 while it is stopped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from pxproxy.lab.server import LabServer

from .test_api_power import client_for

BODY = bytes(range(256)) * 1024  # 256 KiB


async def resource(server: LabServer, vmid: int) -> dict[str, Any]:
    async with client_for(server) as client:
        raw = await client.cluster_resources_raw("vm")
    entries: list[dict[str, Any]] = json.loads(raw)["data"]
    return next(e for e in entries if e["vmid"] == vmid)


async def echo_http(ip: str, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://{ip}:8080/echo", data=body, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp,
    ):
        assert await resp.read() == body


async def echo_tcp(ip: str, port: int, payload: bytes) -> None:
    reader, writer = await asyncio.open_connection(ip, port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.readexactly(len(payload)) == payload
    finally:
        writer.close()
        await writer.wait_closed()


async def test_http_bytes_show_in_cluster_resources_and_status_current(
    lab_server: LabServer,
) -> None:
    guest = lab_server.cluster.add_guest(8401, "lxc", "counted", "pve1", status="running")
    await lab_server.cluster.open()
    before = await resource(lab_server, 8401)

    await echo_http(guest.ip, BODY)

    after = await resource(lab_server, 8401)
    assert after["netin"] - before["netin"] >= len(BODY)
    assert after["netout"] - before["netout"] >= len(BODY)
    async with client_for(lab_server) as client:
        status = await client.guest_status("lxc", "pve1", 8401)
    assert status.netin >= after["netin"]
    assert status.netout >= after["netout"]


async def test_tcp_bytes_are_counted_both_ways(lab_server: LabServer) -> None:
    guest = lab_server.cluster.add_guest(
        8402, "qemu", "game", "pve1", status="running", tcp_ports=(25565,)
    )
    await lab_server.cluster.open()
    before = await resource(lab_server, 8402)
    payload = b"x" * 100_000

    await echo_tcp(guest.ip, 25565, payload)

    after = await resource(lab_server, 8402)
    assert after["netin"] - before["netin"] == len(payload)
    assert after["netout"] - before["netout"] == len(payload)


async def test_counters_reset_on_restart_and_read_zero_while_stopped(
    lab_server: LabServer,
) -> None:
    guest = lab_server.cluster.add_guest(8403, "lxc", "restarted", "pve1", status="running")
    await lab_server.cluster.open()
    await echo_http(guest.ip, BODY)
    assert (await resource(lab_server, 8403))["netin"] >= len(BODY)

    async with client_for(lab_server) as client:
        task = await client.guest_action("lxc", "pve1", 8403, "stop")
        assert (await client.wait_task(task, 10)).ok
        stopped = await resource(lab_server, 8403)
        assert (stopped["netin"], stopped["netout"]) == (0, 0)

        task = await client.guest_action("lxc", "pve1", 8403, "start")
        assert (await client.wait_task(task, 10)).ok
    started = await resource(lab_server, 8403)
    assert started["netin"] < len(BODY)  # counting again from 0, not from before the stop
    await echo_http(guest.ip, BODY[:1000])
    assert (await resource(lab_server, 8403))["netin"] - started["netin"] >= 1000


async def test_a_paused_vm_keeps_its_counters(lab_server: LabServer) -> None:
    guest = lab_server.cluster.add_guest(8404, "qemu", "paused", "pve1", status="running")
    await lab_server.cluster.open()
    await echo_http(guest.ip, BODY)
    before = await resource(lab_server, 8404)
    async with client_for(lab_server) as client:
        for action in ("suspend", "resume"):
            task = await client.guest_action("qemu", "pve1", 8404, action)
            assert (await client.wait_task(task, 10)).ok
    after = await resource(lab_server, 8404)
    assert (after["netin"], after["netout"]) == (before["netin"], before["netout"])
    assert after["netin"] >= len(BODY)
