"""Lab guests' UDP echo ports: open while the guest runs, refused once it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pxproxy.lab.guest_servers import GuestServers
from pxproxy.lab.state import LabCluster

from ..support import wait_for

VMID = 7101
UDP_PORT = 34197
TCP_PORT = 27015
DEADLINE_S = 10.0


class Client(asyncio.DatagramProtocol):
    """A connected UDP client: what it receives, and the errors the kernel hands it."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


async def client_to(host: str, port: int) -> tuple[asyncio.DatagramTransport, Client]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Client, remote_addr=(host, port))
    return transport, protocol


@pytest.fixture
async def lab() -> AsyncIterator[LabCluster]:
    servers = GuestServers()
    cluster = LabCluster(runtime=servers)
    cluster.add_node("pve1")
    cluster.add_guest(
        VMID,
        "lxc",
        "factorio",
        ports=(),
        tcp_ports=(TCP_PORT,),
        udp_ports=(UDP_PORT, TCP_PORT),
        boot_time_s=0.05,
        shutdown_time_s=0.05,
    )
    try:
        yield cluster
    finally:
        await cluster.close()
        await servers.close_all()


async def test_udp_echo_answers_each_sender_while_running_and_counts_traffic(
    lab: LabCluster,
) -> None:
    guest = lab.guests[VMID]
    assert (await lab.start(VMID).wait()).exitstatus == "OK"
    clients = [await client_to(guest.ip, UDP_PORT) for _ in range(3)]
    try:
        for i, (transport, _) in enumerate(clients):
            transport.sendto(f"tick {i}".encode())
        for i, (_, protocol) in enumerate(clients):
            async with asyncio.timeout(DEADLINE_S):
                assert await protocol.received.get() == f"tick {i}".encode()
        # Each datagram counted in and out, as the guest's network counters.
        assert (guest.netin, guest.netout) == (18, 18)
        # A port can be TCP and UDP at once, as a game's query and game ports often are.
        _, writer = await asyncio.open_connection(guest.ip, TCP_PORT)
        writer.close()
    finally:
        for transport, _ in clients:
            transport.close()


async def test_udp_port_is_refused_before_start_and_after_stop(lab: LabCluster) -> None:
    guest = lab.guests[VMID]
    transport, protocol = await client_to(guest.ip, UDP_PORT)
    try:
        transport.sendto(b"anyone?")
        # Nothing bound: the kernel answers ICMP port unreachable, the client sees it.
        await wait_for(lambda: bool(protocol.errors), DEADLINE_S, "the refusal")
        assert isinstance(protocol.errors[0], ConnectionRefusedError)

        assert (await lab.start(VMID).wait()).exitstatus == "OK"
        transport.sendto(b"now?")
        async with asyncio.timeout(DEADLINE_S):
            assert await protocol.received.get() == b"now?"

        assert (await lab.stop(VMID).wait()).exitstatus == "OK"
        refusals = len(protocol.errors)
        transport.sendto(b"still there?")
        await wait_for(lambda: len(protocol.errors) > refusals, DEADLINE_S, "the refusal")
        assert protocol.received.empty()
    finally:
        transport.close()
