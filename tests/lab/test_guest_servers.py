"""Guests' real servers on loopback, driven through LabCluster's power actions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pxproxy.lab.guest_servers import GuestServers
from pxproxy.lab.state import LabCluster, LabGuest

from ..support import wait_for

BOOT_S = 0.2
VMID = 9101
HTTP_PORT = 18080
TCP_PORT = 18081


@pytest.fixture
async def servers() -> AsyncIterator[GuestServers]:
    runtime = GuestServers()
    try:
        yield runtime
    finally:
        await runtime.close_all()


@pytest.fixture
async def lab(servers: GuestServers) -> AsyncIterator[LabCluster]:
    cluster = LabCluster(runtime=servers)
    cluster.add_node("pve1")
    cluster.add_guest(
        VMID,
        "lxc",
        "wiki",
        ports=(HTTP_PORT,),
        tcp_ports=(TCP_PORT,),
        boot_time_s=BOOT_S,
        shutdown_time_s=0.05,
    )
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def refuses(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def running(lab: LabCluster) -> LabGuest:
    guest = lab.guests[VMID]
    task = await lab.start(VMID).wait()
    assert task.exitstatus == "OK"
    return guest


def url(guest: LabGuest, path: str) -> str:
    return f"http://{guest.ip}:{HTTP_PORT}{path}"


async def test_reachable_only_after_boot_time(lab: LabCluster) -> None:
    guest = lab.guests[VMID]
    assert await refuses(guest.ip, HTTP_PORT)
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = lab.start(VMID)
    # Booting: the ports stay closed until the task has run for the boot time.
    assert await refuses(guest.ip, HTTP_PORT)
    assert await refuses(guest.ip, TCP_PORT)
    await task.wait()
    assert loop.time() - began >= BOOT_S
    assert not await refuses(guest.ip, HTTP_PORT)
    assert not await refuses(guest.ip, TCP_PORT)


async def test_http_answers_with_name_health_and_header(
    lab: LabCluster, http: aiohttp.ClientSession
) -> None:
    guest = await running(lab)
    async with http.get(url(guest, "/")) as resp:
        assert resp.status == 200
        assert await resp.text() == f"wiki (vmid {VMID})\n"
        assert resp.headers["X-Lab-Guest"] == str(VMID)
    async with http.get(url(guest, "/healthz")) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with http.get(url(guest, "/nope")) as resp:
        assert resp.status == 404


async def test_websocket_echo(lab: LabCluster, http: aiohttp.ClientSession) -> None:
    guest = await running(lab)
    async with http.ws_connect(url(guest, "/ws")) as ws:
        await ws.send_str("hello")
        assert await ws.receive_str(timeout=5) == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"


async def test_sse_sends_numbered_events_until_the_client_leaves(
    lab: LabCluster, servers: GuestServers, http: aiohttp.ClientSession
) -> None:
    guest = await running(lab)
    events: list[str] = []
    async with http.get(url(guest, "/sse")) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        async with asyncio.timeout(5):
            async for line in resp.content:
                if line.startswith(b"data: "):
                    events.append(line.decode().strip())
                if len(events) == 3:
                    break
    assert events == ["data: 0", "data: 1", "data: 2"]
    await wait_for(lambda: servers.connections(VMID) == 0, 5, "the SSE connection to end")


async def test_big_body_is_exact_and_bounded(lab: LabCluster, http: aiohttp.ClientSession) -> None:
    guest = await running(lab)
    size = 5 * 1024 * 1024 + 123
    received = 0
    async with http.get(url(guest, f"/big?bytes={size}")) as resp:
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        async for chunk in resp.content.iter_chunked(1 << 16):
            received += len(chunk)
    assert received == size
    assert guest.netout >= size
    for bad in ("abc", "-1", str(2 * 1024**3 + 1)):
        async with http.get(url(guest, f"/big?bytes={bad}")) as resp:
            assert resp.status == 400


async def test_post_echo_streams_the_body_back(
    lab: LabCluster, http: aiohttp.ClientSession
) -> None:
    guest = await running(lab)
    body = bytes(range(256)) * 4096
    netin, netout = guest.netin, guest.netout
    async with http.post(url(guest, "/echo"), data=body) as resp:
        assert await resp.read() == body
    assert guest.netin - netin >= len(body)
    assert guest.netout - netout >= len(body)


async def test_tcp_echo_and_counters(lab: LabCluster) -> None:
    guest = await running(lab)
    reader, writer = await asyncio.open_connection(guest.ip, TCP_PORT)
    try:
        writer.write(b"ping\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"ping\n"
    finally:
        writer.close()
        await writer.wait_closed()
    assert guest.netin >= 5
    assert guest.netout >= 5
    assert lab.resources("vm")[0]["netin"] == guest.netin


async def test_stop_refuses_new_connections_and_drops_open_ones(
    lab: LabCluster, servers: GuestServers, http: aiohttp.ClientSession
) -> None:
    guest = await running(lab)
    reader, writer = await asyncio.open_connection(guest.ip, TCP_PORT)
    await wait_for(lambda: servers.connections(VMID) == 1, 5, "the TCP connection")
    task = await lab.stop(VMID).wait()
    assert task.exitstatus == "OK"
    assert not servers.is_open(VMID)
    assert await refuses(guest.ip, HTTP_PORT)
    assert await refuses(guest.ip, TCP_PORT)
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(url(guest, "/"))
    # The open connection was reset: reading ends at once instead of hanging.
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        data = b""
    assert data == b""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_suspend_closes_and_resume_reopens(
    lab: LabCluster, http: aiohttp.ClientSession
) -> None:
    guest = await running(lab)
    await lab.suspend(VMID).wait()
    assert await refuses(guest.ip, HTTP_PORT)
    await lab.resume(VMID).wait()
    async with http.get(url(guest, "/healthz")) as resp:
        assert resp.status == 200


async def test_port_in_use_fails_the_start_task(lab: LabCluster) -> None:
    guest = lab.guests[VMID]
    squatter = await asyncio.start_server(lambda r, w: None, guest.ip, TCP_PORT)
    try:
        task = await lab.start(VMID).wait()
    finally:
        squatter.close()
        await squatter.wait_closed()
    assert task.exitstatus is not None
    assert task.exitstatus.startswith("startup failed")
    assert guest.status == "stopped"
    # Nothing half-open stays behind: the HTTP port was released too.
    assert await refuses(guest.ip, HTTP_PORT)
