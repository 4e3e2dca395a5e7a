"""UdpProbe: a UDP port is ready when a datagram to it is not refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import cast

from pxproxy.config.models import IdleConfig
from pxproxy.wake.readiness import TcpProbe, UdpProbe, probe_for

HOST = "127.0.0.1"


class Counting(asyncio.DatagramProtocol):
    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if self.answer and self.transport is not None:
            self.transport.sendto(b"pong", addr)


@contextlib.asynccontextmanager
async def game_server(*, answer: bool) -> AsyncIterator[tuple[int, Counting]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: Counting(answer), local_addr=(HOST, 0)
    )
    try:
        yield transport.get_extra_info("sockname")[1], protocol
    finally:
        transport.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def test_a_port_nothing_holds_is_refused() -> None:
    assert await UdpProbe(spacing_s=0).check(HOST, closed_port()) is False


async def test_a_silent_server_and_an_answering_one_are_both_ready() -> None:
    async with game_server(answer=False) as (port, server):
        assert await UdpProbe(spacing_s=0).check(HOST, port) is True
        assert server.received == 1  # an empty datagram, which game servers ignore
    async with game_server(answer=True) as (port, server):
        assert await UdpProbe(spacing_s=0, silence_s=30).check(HOST, port) is True


async def test_probes_are_spaced_so_a_rate_limited_refusal_is_not_taken_for_silence() -> None:
    async with game_server(answer=True) as (port, server):
        probe = UdpProbe(spacing_s=0.3)
        assert await probe.check(HOST, port)
        began = time.monotonic()
        assert await probe.check(HOST, port)
        assert time.monotonic() - began >= 0.3
        assert server.received == 2


def test_udp_routes_get_the_udp_probe_unless_an_http_check_is_set() -> None:
    assert isinstance(probe_for(IdleConfig(), protocol="udp"), UdpProbe)
    assert isinstance(probe_for(IdleConfig(), protocol="tcp"), TcpProbe)
    http = IdleConfig.model_validate({"ready": {"http": "/health"}})
    assert not isinstance(probe_for(http, protocol="udp"), UdpProbe)


def test_a_tcp_route_turned_udp_on_the_same_port_gets_the_udp_probe() -> None:
    from typing import Any

    from pxproxy.config.models import RouteConfig
    from pxproxy.inventory.store import Inventory
    from pxproxy.wake.manager import WakeManager
    from pxproxy.wake.waker import Waker

    def game(protocol: str) -> RouteConfig:
        return RouteConfig.model_validate(
            {
                "listen": "127.0.0.1:34197",
                "protocol": protocol,
                "guest": "home:7101",
                "port": 34197,
                "idle": {"timeout": "10m"},
            }
        )

    power: Any = object()  # nothing is woken or stopped: the manager is never started
    manager = WakeManager([game("tcp")], Inventory(), power)
    waker = manager.gate_for(0)
    assert isinstance(waker, Waker)
    assert isinstance(waker._probe, TcpProbe)
    manager.update([game("udp")])
    assert manager.gate_for(0) is waker  # the same guest keeps its waker and state
    assert isinstance(waker._probe, UdpProbe)
    manager.update([game("tcp")])
    assert isinstance(waker._probe, TcpProbe)
