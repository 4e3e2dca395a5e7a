"""UDP routes end to end: real datagrams through UdpProxy to the lab guests' UDP echo ports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.proxy.udp import UdpProxy
from pxproxy.proxy.udp_stats import UdpRouteStats
from pxproxy.wake.contract import ALWAYS_READY, Gate, WakeError, WakeTimeout

from ..support import wait_for
from .test_tcp import publish
from .udp_support import DEADLINE_S, SleepyGate, UdpClient, clients, start_udp_guest

# vmids 7111-7119: used by no other test (the lab derives guest addresses from vmids).
VMID = 7111
OTHER_VMID = 7112
GAME_PORT = 34197
LISTEN = "127.0.0.1:0"

MakeProxy = Callable[..., Awaitable[tuple[UdpProxy, tuple[str, int]]]]


def udp_route(
    listen: str = LISTEN, guest: str = "factorio", port: int = GAME_PORT, **udp: Any
) -> RouteConfig:
    return RouteConfig.model_validate(
        {"listen": listen, "protocol": "udp", "guest": guest, "port": port, "udp": udp or None}
    )


@pytest.fixture
async def game(lab_server: LabServer) -> LabGuest:
    return await start_udp_guest(lab_server, VMID, "factorio", GAME_PORT)


@pytest.fixture
def inventory(game: LabGuest) -> Inventory:
    inv = Inventory()
    publish(inv, (VMID, "factorio", (game.ip,)))
    return inv


@pytest.fixture
async def make_proxy(inventory: Inventory) -> AsyncIterator[MakeProxy]:
    proxies: list[UdpProxy] = []

    async def make(
        gate: Gate | None = None, *, port: int = GAME_PORT, **options: Any
    ) -> tuple[UdpProxy, tuple[str, int]]:
        udp = options.pop("udp", {})
        route = udp_route(port=port, **udp)
        the_gate: Gate = gate if gate is not None else ALWAYS_READY
        proxy = UdpProxy(inventory, lambda _: the_gate, routes=[route], **options)
        proxies.append(proxy)
        await proxy.start()
        return proxy, proxy.bound_addresses()[LISTEN]

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.close()


def stats_of(proxy: UdpProxy) -> UdpRouteStats:
    return proxy.stats.route(f"udp:{LISTEN}")


def udp_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("udp-")]


async def test_many_clients_at_once_each_get_their_own_replies(
    game: LabGuest, make_proxy: MakeProxy
) -> None:
    proxy, address = await make_proxy()
    async with clients(address, 20) as players:
        for round_ in range(5):
            for i, player in enumerate(players):
                player.send(f"player {i} tick {round_}".encode())
        for i, player in enumerate(players):
            expected = [f"player {i} tick {r}".encode() for r in range(5)]
            assert await player.receive(5) == expected
        stats = stats_of(proxy)
        assert stats.sessions == stats.sessions_opened == proxy.active_sessions == 20
        assert stats.datagrams_to_guest == stats.datagrams_to_client == 100
        sent = sum(len(f"player {i} tick {r}") for i in range(20) for r in range(5))
        assert stats.bytes_to_guest == stats.bytes_to_client == game.netin == sent
        assert all(p.received.empty() for p in players)  # nobody got another's reply


async def test_a_quiet_session_ends_after_its_timeout_and_releases_the_guest(
    make_proxy: MakeProxy,
) -> None:
    """A fake clock: the sweeps are called by hand (the background one would wait 150 s)."""
    now = 1000.0
    gate = SleepyGate(ready=True)
    proxy, address = await make_proxy(
        gate, udp={"session_timeout": "600s"}, clock=lambda: now, sweep_interval_s=3600
    )
    stats = stats_of(proxy)
    async with clients(address) as (player,):
        player.send(b"hello")
        assert await player.receive() == [b"hello"]
        assert (stats.sessions, gate.holds) == (1, 1)

        proxy.sweep(1001.0)  # traffic since the last sweep: idle from now on
        assert gate.activities == 1
        proxy.sweep(1001.0 + 599.9)
        assert (stats.sessions, gate.holds, gate.activities) == (1, 1, 1)
        proxy.sweep(1001.0 + 600.0)
        assert (stats.sessions, gate.holds) == (0, 0)

        # The same client again: a new session, which holds the guest again.
        player.send(b"back")
        assert await player.receive() == [b"back"]
        assert (stats.sessions, stats.sessions_opened, gate.holds) == (1, 2, 1)


async def test_the_background_sweep_ends_quiet_sessions(make_proxy: MakeProxy) -> None:
    proxy, address = await make_proxy(udp={"session_timeout": "200ms"})
    async with clients(address, 3) as players:
        for player in players:
            player.send(b"ping")
        for player in players:
            assert await player.receive() == [b"ping"]
        await wait_for(lambda: stats_of(proxy).sessions == 0, DEADLINE_S, "sessions to end")
    assert stats_of(proxy).sessions_opened == 3


async def test_datagrams_wait_for_a_sleeping_guest_then_go_in_order(
    game: LabGuest, make_proxy: MakeProxy
) -> None:
    gate = SleepyGate()
    proxy, address = await make_proxy(gate)
    async with clients(address, 3) as players:
        for n in range(4):
            for i, player in enumerate(players):
                player.send(f"{i}:{n}".encode())
        await wait_for(lambda: proxy.held_datagrams == 12, DEADLINE_S, "12 datagrams held")
        # One wake for the route, not one per client or datagram; each client holds the guest.
        assert (gate.ready_calls, gate.holds) == (1, 3)
        assert game.netin == 0

        gate.wake()
        for i, player in enumerate(players):
            assert await player.receive(4) == [f"{i}:{n}".encode() for n in range(4)]
        assert proxy.held_datagrams == 0
        assert gate.ready_calls == 1
        assert sum(stats_of(proxy).dropped.values()) == 0


async def test_the_wake_buffer_is_bounded_and_its_drops_counted(
    game: LabGuest, make_proxy: MakeProxy
) -> None:
    gate = SleepyGate()
    proxy, address = await make_proxy(gate, udp={"buffer_datagrams": 3, "buffer_bytes": 2000})
    stats = stats_of(proxy)
    async with clients(address, 2) as (first, second):
        for n in range(10):
            first.send(f"first {n}".encode())
        await wait_for(lambda: stats.dropped["buffer_full"] == 7, DEADLINE_S, "7 drops")
        assert proxy.held_datagrams == 3
        # A new client while the buffer is full: its datagram is dropped, and no session kept
        # for it (it would hold the guest up with nothing to send).
        second.send(b"second 0")
        await wait_for(lambda: stats.dropped["buffer_full"] == 8, DEADLINE_S, "8 drops")
        assert (stats.sessions, gate.holds) == (1, 1)

        gate.wake()
        assert await first.receive(3) == [b"first 0", b"first 1", b"first 2"]
        # Open now: later datagrams pass unbuffered, whatever the buffer's size.
        for n in range(10, 20):
            first.send(f"first {n}".encode())
        assert await first.receive(10) == [f"first {n}".encode() for n in range(10, 20)]
        second.send(b"x" * 1400)
        assert await second.receive() == [b"x" * 1400]
    assert stats.dropped["buffer_full"] == 8


async def test_the_buffer_is_bounded_in_bytes_too(make_proxy: MakeProxy) -> None:
    gate = SleepyGate()
    proxy, address = await make_proxy(gate, udp={"buffer_bytes": 1500})
    async with clients(address) as (player,):
        player.send(b"a" * 1000)
        player.send(b"b" * 1000)  # 2000 bytes would exceed the 1500
        player.send(b"c" * 400)
        await wait_for(lambda: stats_of(proxy).dropped["buffer_full"] == 1, DEADLINE_S, "a drop")
        await wait_for(lambda: proxy.held_datagrams == 2, DEADLINE_S, "two held")
        gate.wake()
        assert await player.receive(2) == [b"a" * 1000, b"c" * 400]


@pytest.mark.parametrize(
    "error",
    [
        WakeError("factorio", "start failed: no space left on device", 30.0),
        WakeTimeout("factorio", "still starting after 5s", 5.0),
    ],
    ids=["failed", "timeout"],
)
async def test_a_failed_wake_drops_what_was_held_and_counts_it(
    game: LabGuest,
    make_proxy: MakeProxy,
    caplog: pytest.LogCaptureFixture,
    error: WakeError,
) -> None:
    gate = SleepyGate(error)
    proxy, address = await make_proxy(gate)
    stats = stats_of(proxy)
    async with clients(address, 2) as players:
        for player in players:
            player.send(b"join")
            player.send(b"join again")
        await wait_for(lambda: stats.dropped["wake_failed"] == 4, DEADLINE_S, "4 drops")
    assert (stats.sessions, gate.holds, proxy.held_datagrams) == (0, 0, 0)
    assert game.netin == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "pxproxy.proxy.udp"]
    assert error.message in lines[0]
    assert "factorio:34197" in lines[0]


async def test_a_session_whose_guest_went_to_sleep_wakes_it_again(
    game: LabGuest, make_proxy: MakeProxy
) -> None:
    gate = SleepyGate(ready=True)
    proxy, address = await make_proxy(gate)
    async with clients(address) as (player,):
        player.send(b"before")
        assert await player.receive() == [b"before"]
        gate.sleep()  # stopped from the Proxmox UI, say: the session's socket leads nowhere
        player.send(b"after")
        await wait_for(lambda: gate.ready_calls == 2, DEADLINE_S, "a second wake")
        gate.wake()
        assert await player.receive() == [b"after"]
    assert stats_of(proxy).sessions_opened == 2


async def test_new_sessions_follow_the_guest_to_its_new_address(
    lab_server: LabServer, inventory: Inventory, game: LabGuest, make_proxy: MakeProxy
) -> None:
    other = await start_udp_guest(lab_server, OTHER_VMID, "factorio2", GAME_PORT)
    _, address = await make_proxy()
    async with clients(address, 2) as (early, late):
        early.send(b"before")
        assert await early.receive() == [b"before"]
        assert (game.netin, other.netin) == (6, 0)

        # DHCP moved the guest: the next session goes where the live snapshot says.
        publish(inventory, (VMID, "factorio", (other.ip,)))
        late.send(b"after!")
        assert await late.receive() == [b"after!"]
        assert (game.netin, other.netin) == (6, 6)
        # An open session keeps its socket (the old address) until it ends.
        early.send(b"still")
        assert await early.receive() == [b"still"]
        assert (game.netin, other.netin) == (11, 6)


async def test_refusals_from_the_guest_side_are_counted_not_fatal(
    make_proxy: MakeProxy,
) -> None:
    proxy, address = await make_proxy(port=GAME_PORT + 1)  # nothing listens there
    stats = stats_of(proxy)
    async with clients(address) as (player,):
        player.send(b"anyone?")
        await wait_for(lambda: stats.guest_errors >= 1, DEADLINE_S, "the ICMP refusal")
        player.send(b"still?")
        await wait_for(lambda: stats.datagrams_to_guest == 2, DEADLINE_S, "the second try")
        assert stats.sessions == 1  # the session lives on: the game may come up yet
    assert stats.datagrams_to_client == 0


async def test_clients_beyond_max_sessions_are_dropped_and_counted(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, address = await make_proxy(udp={"max_sessions": 2})
    stats = stats_of(proxy)
    async with clients(address, 3) as (a, b, c):
        for player in (a, b):
            player.send(b"in")
            assert await player.receive() == [b"in"]
        c.send(b"me too")
        c.send(b"please")
        await wait_for(lambda: stats.dropped["sessions_full"] == 2, DEADLINE_S, "2 drops")
        assert stats.sessions == 2
        a.send(b"still in")
        assert await a.receive() == [b"still in"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once, however many datagrams
    assert "max_sessions (2)" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("published", "why"),
    [
        ((VMID, "factorio", ()), "has no IP address yet"),
        ((VMID, "other", ("127.0.0.2",)), "guest 'factorio' is not in the inventory"),
    ],
    ids=["no-address", "unknown-guest"],
)
async def test_an_unresolvable_guest_drops_and_counts(
    inventory: Inventory,
    make_proxy: MakeProxy,
    caplog: pytest.LogCaptureFixture,
    published: tuple[int, str, tuple[str, ...]],
    why: str,
) -> None:
    publish(inventory, published)
    proxy, address = await make_proxy()
    async with clients(address) as (player,):
        player.send(b"hello?")
        await wait_for(lambda: stats_of(proxy).dropped["no_upstream"] == 1, DEADLINE_S, "a drop")
    assert stats_of(proxy).sessions == 0
    assert any(why in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


async def test_close_ends_sessions_releases_holds_and_leaves_no_task(
    make_proxy: MakeProxy,
) -> None:
    open_gate, waiting_gate = SleepyGate(ready=True), SleepyGate()
    proxy, address = await make_proxy(open_gate)
    waiting_proxy, waiting_address = await make_proxy(waiting_gate)
    async with clients(address) as (player,), clients(waiting_address) as (waiting,):
        player.send(b"ping")
        assert await player.receive() == [b"ping"]
        waiting.send(b"wake up")
        await wait_for(lambda: waiting_gate.ready_calls == 1, DEADLINE_S, "the wake")

        await proxy.close()
        await waiting_proxy.close()

        assert udp_tasks() == []
        assert open_gate.holds == waiting_gate.holds == 0
        assert proxy.bound_addresses() == waiting_proxy.bound_addresses() == {}
        assert proxy.active_sessions == stats_of(proxy).sessions == 0
        # The socket is gone: the kernel refuses what the client sends now.
        player.send(b"hello?")
        await wait_for(lambda: bool(player.errors), DEADLINE_S, "the refusal")
        assert isinstance(player.errors[0], ConnectionRefusedError)
        # close() is final: a later apply opens nothing.
        assert await proxy.apply([udp_route()]) == []
        assert proxy.bound_addresses() == {}


async def test_apply_opens_new_addresses_and_a_removed_one_ends_its_sessions(
    make_proxy: MakeProxy,
) -> None:
    gate = SleepyGate(ready=True)
    proxy, first = await make_proxy(gate)
    second_listen = "127.0.0.2:0"
    async with clients(first) as (player,):
        player.send(b"one")
        assert await player.receive() == [b"one"]

        assert await proxy.apply([udp_route(), udp_route(second_listen)]) == []
        bound = proxy.bound_addresses()
        assert bound[LISTEN] == first  # kept, not reopened
        async with clients(bound[second_listen]) as (other,):
            other.send(b"two")
            assert await other.receive() == [b"two"]
            assert gate.holds == 2

            # The first route goes: its session ends (its socket was the way back).
            assert await proxy.apply([udp_route(second_listen)]) == []
            assert list(proxy.bound_addresses()) == [second_listen]
            assert gate.holds == 1
            other.send(b"three")
            assert await other.receive() == [b"three"]


async def test_a_route_changed_in_place_sends_new_sessions_its_new_way(
    lab_server: LabServer, inventory: Inventory, game: LabGuest, make_proxy: MakeProxy
) -> None:
    other = await start_udp_guest(lab_server, OTHER_VMID, "factorio2", GAME_PORT)
    publish(inventory, (VMID, "factorio", (game.ip,)), (OTHER_VMID, "factorio2", (other.ip,)))
    proxy, address = await make_proxy()
    async with clients(address, 2) as (early, late):
        early.send(b"old")
        assert await early.receive() == [b"old"]
        assert await proxy.apply([udp_route(guest="factorio2")]) == []
        assert proxy.bound_addresses()[LISTEN] == address
        late.send(b"new")
        assert await late.receive() == [b"new"]
        assert (game.netin, other.netin) == (3, 3)


async def test_an_address_that_cannot_be_bound_is_named_and_the_rest_served(
    make_proxy: MakeProxy,
) -> None:
    proxy, address = await make_proxy()
    taken = f"{address[0]}:{address[1]}"
    errors = await proxy.apply([udp_route(), udp_route(taken)])
    assert len(errors) == 1
    assert errors[0].startswith(f"route udp:{taken} listen {taken}: address already in use")
    async with clients(address) as (player,):
        player.send(b"still here")
        assert await player.receive() == [b"still here"]


def test_only_udp_routes_are_taken() -> None:
    tcp = RouteConfig(listen="127.0.0.1:0", guest="factorio", port=GAME_PORT)
    with pytest.raises(ValueError, match="not a UDP route"):
        UdpProxy(Inventory(), lambda _: ALWAYS_READY, routes=[tcp])


async def test_a_client_gets_its_replies_from_the_route_address(
    make_proxy: MakeProxy,
) -> None:
    """A game client checks where replies come from: the address it sent to, not the
    guest's (a connected client socket would drop anything else)."""
    _, address = await make_proxy()
    loop = asyncio.get_running_loop()
    senders: list[tuple[str, int]] = []

    class Unconnected(UdpClient):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            senders.append(addr)
            super().datagram_received(data, addr)

    transport, player = await loop.create_datagram_endpoint(
        Unconnected, local_addr=("127.0.0.1", 0)
    )
    try:
        transport.sendto(b"who answers?", address)
        assert await player.receive() == [b"who answers?"]
        assert senders == [address]
    finally:
        transport.close()
