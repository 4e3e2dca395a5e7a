"""TcpProxy.apply: TCP route listeners follow a new route set (a reload, or guests' notes)
with real sockets to a lab guest's echo server; open relays are left to finish."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.proxy.tcp import TcpProxy
from pxproxy.wake.contract import ALWAYS_READY

from ..support import wait_for
from .test_tcp import GAME_PORT, publish, roundtrip, start_game_guest

# vmid 9561: used by no other test (the lab derives guest addresses from vmids).
VMID = 9561
DEADLINE_S = 10.0
A, B, C = "127.0.0.1:0", "127.0.0.2:0", "127.0.0.3:0"


def tcp_route(listen: str, guest: str = "mc", port: int = GAME_PORT) -> RouteConfig:
    return RouteConfig(listen=listen, guest=guest, port=port)


@pytest.fixture
async def game(lab_server: LabServer) -> LabGuest:
    return await start_game_guest(lab_server, VMID, "mc")


@pytest.fixture
async def proxy(game: LabGuest) -> AsyncIterator[TcpProxy]:
    inventory = Inventory()
    publish(inventory, (VMID, "mc", (game.ip,)))
    tcp = TcpProxy(inventory, lambda _: ALWAYS_READY, routes=[tcp_route(A)], connect_timeout_s=2.0)
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.close()


async def refused(address: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*address)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    await writer.drain()
    async with asyncio.timeout(DEADLINE_S):
        return await reader.readexactly(len(payload))


async def test_a_new_listen_address_accepts_and_the_old_one_still_does(proxy: TcpProxy) -> None:
    first = proxy.bound_addresses()[A]
    assert await proxy.apply([tcp_route(A), tcp_route(B)]) == []
    bound = proxy.bound_addresses()
    assert bound[A] == first  # the listener kept, not reopened
    assert bound[B][0] == "127.0.0.2"
    assert await roundtrip(bound[B], b"via the new listener") == b"via the new listener"
    assert await roundtrip(bound[A], b"via the old one") == b"via the old one"


async def test_a_removed_address_refuses_new_connections_while_an_open_relay_flows(
    proxy: TcpProxy,
) -> None:
    await proxy.apply([tcp_route(A), tcp_route(B)])
    address = proxy.bound_addresses()[B]
    reader, writer = await asyncio.open_connection(*address)
    try:
        assert await echo(reader, writer, b"before") == b"before"
        assert await proxy.apply([tcp_route(A)]) == []
        assert B not in proxy.bound_addresses()
        assert await refused(address)
        assert proxy.active_connections == 1
        # The relay accepted before the change goes on, both ways.
        assert await echo(reader, writer, b"after the reload") == b"after the reload"
        writer.write_eof()
        async with asyncio.timeout(DEADLINE_S):
            assert await reader.read() == b""
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    await wait_for(lambda: proxy.active_connections == 0, DEADLINE_S, "the relay to end")
    assert await roundtrip(proxy.bound_addresses()[A], b"A") == b"A"


async def test_a_bind_failure_is_returned_and_the_other_routes_are_served(
    proxy: TcpProxy,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.3", 0))
    taken.listen()
    port = taken.getsockname()[1]
    busy = f"127.0.0.3:{port}"
    try:
        errors = await proxy.apply([tcp_route(A), tcp_route(busy), tcp_route(B)])
        assert len(errors) == 1
        assert busy in errors[0]
        bound = proxy.bound_addresses()
        assert busy not in bound
        assert await roundtrip(bound[A], b"A") == b"A"
        assert await roundtrip(bound[B], b"B") == b"B"
    finally:
        taken.close()
    # Freed: the next apply binds it (a failed address is tried again, not forgotten).
    assert await proxy.apply([tcp_route(A), tcp_route(busy), tcp_route(B)]) == []
    assert await roundtrip(proxy.bound_addresses()[busy], b"C") == b"C"


async def test_a_route_changed_at_the_same_address_relays_new_connections_anew(
    proxy: TcpProxy, game: LabGuest
) -> None:
    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"the new upstream\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, game.ip, 0)
    try:
        other_port = server.sockets[0].getsockname()[1]
        address = proxy.bound_addresses()[A]
        reader, writer = await asyncio.open_connection(*address)
        assert await echo(reader, writer, b"old") == b"old"
        assert await proxy.apply([tcp_route(A, port=other_port)]) == []
        assert proxy.bound_addresses()[A] == address
        new_reader, new_writer = await asyncio.open_connection(*address)
        async with asyncio.timeout(DEADLINE_S):
            assert await new_reader.read() == b"the new upstream\n"
        new_writer.close()
        # The connection opened before still talks to the echo server.
        assert await echo(reader, writer, b"still old") == b"still old"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_apply_after_close_opens_nothing(proxy: TcpProxy) -> None:
    await proxy.close()
    assert await proxy.apply([tcp_route(A), tcp_route(B)]) == []
    assert proxy.bound_addresses() == {}
