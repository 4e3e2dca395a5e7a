"""UDP routes and idle-watch together: the lab's Proxmox API, a real poller, the wake
manager's gates, and datagrams through UdpProxy to a guest that only speaks UDP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.proxy.udp import UdpProxy
from pxproxy.proxy.udp_stats import UdpRouteStats
from pxproxy.wake.contract import WakeState
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.power import PvePowerControl

from ..support import lab_cluster, wait_for
from .udp_support import DEADLINE_S, clients

CLUSTER = "lab"
# vmids 7121-7129: used by no other test.
VMID = 7121
GAME_PORT = 34197
LISTEN = "127.0.0.1:0"


@dataclass
class Stack:
    lab: LabServer
    manager: WakeManager
    proxy: UdpProxy
    address: tuple[str, int]

    @property
    def stats(self) -> UdpRouteStats:
        return self.proxy.stats.route(f"udp:{LISTEN}")

    def tasks(self) -> list[str]:
        return [t.type for t in self.lab.tasks if t.id == str(VMID)]


StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def stack(lab_server: LabServer) -> StackFactory:
    @contextlib.asynccontextmanager
    async def build(
        idle: dict[str, Any], udp: dict[str, Any] | None = None
    ) -> AsyncIterator[Stack]:
        route: dict[str, Any] = {
            "listen": LISTEN,
            "protocol": "udp",
            "guest": "factorio",
            "port": GAME_PORT,
            "idle": {"wake_timeout": "10s", "shutdown_timeout": "2s", **idle},
        }
        if udp is not None:
            route["udp"] = udp
        config = Config.model_validate(
            {
                "proxmox": [lab_cluster(lab_server, name=CLUSTER, poll_interval="0.1s")],
                "routes": [route],
            }
        )
        inventory = Inventory()
        poller, client = make_poller(CLUSTER, config.proxmox[0], inventory, config, None)
        polling = asyncio.create_task(poller.run(), name="test-poller")
        manager = WakeManager(
            config.routes, inventory, PvePowerControl({CLUSTER: client}), check_interval_s=0.05
        )
        proxy = UdpProxy(inventory, manager.gate_for, routes=config.routes)
        try:
            await inventory.wait_until(lambda s: bool(s.guests), 10)
            await manager.start()
            await proxy.start()
            yield Stack(lab_server, manager, proxy, proxy.bound_addresses()[LISTEN])
        finally:
            await proxy.close()
            await manager.stop()
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await client.close()

    return build


def add_game(lab: LabServer, **knobs: Any) -> LabGuest:
    # UDP only: a TCP connect to the port would never succeed, so readiness must be UDP's.
    knobs = {"boot_time_s": 0.3, "shutdown_time_s": 0.05, "static_ip": True, **knobs}
    return lab.cluster.add_guest(
        VMID, "lxc", "factorio", "pve1", ports=(), udp_ports=(GAME_PORT,), **knobs
    )


async def test_the_first_datagram_wakes_the_guest_once_and_what_waited_arrives_in_order(
    lab_server: LabServer, stack: StackFactory
) -> None:
    guest = add_game(lab_server)
    async with stack({"timeout": "1h"}) as s, clients(s.address, 3) as players:
        assert s.manager.gate_for(0).state is WakeState.ASLEEP
        for n in range(5):
            for i, player in enumerate(players):
                player.send(f"{i}:{n}".encode())
        for i, player in enumerate(players):
            assert await player.receive(5) == [f"{i}:{n}".encode() for n in range(5)]
        assert guest.status == "running"
        assert s.tasks() == ["vzstart"]  # one start for every client and datagram
        assert sum(s.stats.dropped.values()) == 0
        assert s.manager.stats.wakes_ok == 1


async def test_a_playing_client_keeps_the_guest_up_and_the_idle_stop_follows_its_session(
    lab_server: LabServer, stack: StackFactory
) -> None:
    guest = add_game(lab_server)
    idle = {"timeout": "300ms"}
    async with stack(idle, {"session_timeout": "400ms"}) as s, clients(s.address) as (player,):
        player.send(b"join")
        assert await player.receive() == [b"join"]
        waker = next(w for w in s.manager.wakers if w.idle is not None)
        checks = waker.busy_checks
        # Silent but within its session: idle checks find the session holding the guest.
        await wait_for(lambda: waker.busy_checks >= checks + 3, DEADLINE_S, "three idle checks")
        assert guest.status == "running"
        # The session ends on its timeout; the idle timeout then runs, and the guest stops.
        await wait_for(lambda: s.stats.sessions == 0, DEADLINE_S, "the session to end")
        await wait_for(lambda: guest.status == "stopped", DEADLINE_S, "the idle stop")
        assert s.tasks() == ["vzstart", "vzshutdown"]

        # The next datagram wakes it again.
        player.send(b"rejoin")
        assert await player.receive() == [b"rejoin"]
        assert s.tasks() == ["vzstart", "vzshutdown", "vzstart"]


async def test_a_start_that_fails_drops_what_waited_and_counts_it(
    lab_server: LabServer, stack: StackFactory
) -> None:
    add_game(lab_server, boot_time_s=0.05, fail_start="startup for container '7121' failed")
    async with (
        stack({"timeout": "1h", "retry_after": "30s"}) as s,
        clients(s.address, 2) as players,
    ):
        for player in players:
            player.send(b"join")
        await wait_for(lambda: s.stats.dropped["wake_failed"] == 2, DEADLINE_S, "the drops")
        # The circuit is open: a client trying again is dropped at once, no second start.
        players[0].send(b"again")
        await wait_for(lambda: s.stats.dropped["wake_failed"] == 3, DEADLINE_S, "another drop")
        assert s.tasks() == ["vzstart"]
        assert s.stats.sessions == 0
        assert all(p.received.empty() for p in players)
