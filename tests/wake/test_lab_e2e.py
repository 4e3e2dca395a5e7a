"""Idle-watch end to end: the lab's Proxmox API, a real inventory poller, real probes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.pve.client import PveClient
from pxproxy.wake.contract import Gate, WakeError, WakeState, WakeTimeout
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.power import PvePowerControl
from pxproxy.wake.waker import OUTCOME_UNKNOWN

from ..support import HOST, lab_cluster, wait_for

CLUSTER = "lab"
BOOT_S = 0.2
IDLE_S = 0.3


@dataclass
class Stack:
    lab: LabServer
    inventory: Inventory
    manager: WakeManager
    client: PveClient

    def gate(self, index: int = 0) -> Gate:
        return self.manager.gate_for(index)

    def tasks(self, action: str | None = None) -> list[tuple[str, str]]:
        """(task type, vmid) of every task the lab ran; types like "vzstart", "qmsuspend"."""
        return [(t.type, t.id) for t in self.lab.tasks if action is None or t.type.endswith(action)]


class StackFactory(Protocol):
    def __call__(
        self, routes: list[dict[str, object]], *, url: str | None = None
    ) -> contextlib.AbstractAsyncContextManager[Stack]:
        """A stack on the lab (or on `url`, a way to it) with these routes."""


@pytest.fixture
def stack(lab_server: LabServer) -> StackFactory:
    @contextlib.asynccontextmanager
    async def build(
        routes: list[dict[str, object]], *, url: str | None = None
    ) -> AsyncIterator[Stack]:
        config = Config.model_validate(
            {
                "proxmox": [
                    lab_cluster(
                        lab_server, name=CLUSTER, url=url or lab_server.url, poll_interval="0.1s"
                    )
                ],
                "routes": routes,
            }
        )
        inventory = Inventory()
        poller, client = make_poller(CLUSTER, config.proxmox[0], inventory, config, None)
        polling = asyncio.create_task(poller.run(), name="test-poller")
        manager = WakeManager(
            config.routes,
            inventory,
            PvePowerControl({CLUSTER: client}),
            check_interval_s=0.05,
        )
        try:
            await inventory.wait_until(lambda s: bool(s.guests), 10)
            await manager.start()
            yield Stack(lab_server, inventory, manager, client)
        finally:
            await manager.stop()
            polling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await polling
            await client.close()

    return build


@dataclass
class Relay:
    """A TCP relay in front of the lab's API: `cut()` is Proxmox going away (its connections
    reset, new ones refused), `mend()` brings it back on the same port."""

    target_port: int
    port: int = 0
    _server: asyncio.Server | None = None
    _conns: set[asyncio.StreamWriter] = field(default_factory=set)
    _pipes: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._pipe, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in self._conns:
            writer.transport.abort()
        # The handlers run in tasks of asyncio's server: wait for each to see its reset.
        pipes = list(self._pipes)
        if pipes:
            await asyncio.wait(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._conns.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._conns.add(up_writer)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._conns.difference_update((writer, up_writer))
            self._pipes.discard(task)


def add_guest(lab: LabServer, vmid: int, kind: str, name: str, **knobs: object) -> LabGuest:
    knobs.setdefault("boot_time_s", BOOT_S)
    knobs.setdefault("shutdown_time_s", 0.05)
    # A DHCP VM is only found through its guest agent.
    knobs.setdefault("agent", kind == "qemu")
    return lab.cluster.add_guest(vmid, kind, name, "pve1", **knobs)  # type: ignore[arg-type]


def idle_route(ref: str, port: int = 8080, **idle: object) -> dict[str, object]:
    settings: dict[str, object] = {"timeout": "1h", "wake_timeout": "10s", "retry_after": "30s"}
    settings.update(idle)
    return {"host": f"{ref}.example.com", "guest": ref, "port": port, "idle": settings}


def when(lab: LabServer, vmid: int, state: str) -> float:
    """The lab's time of the guest's first entry into state."""
    return next(t for t, s in lab.cluster.guests[vmid].history if s == state)


async def fetch(url: str) -> str | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp,
        ):
            return await resp.text()
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None


async def test_a_stopped_guest_wakes_and_its_port_answers(
    lab_server: LabServer, stack: StackFactory
) -> None:
    guest = add_guest(lab_server, 101, "lxc", "wiki")
    async with stack([idle_route("wiki")]) as s:
        assert s.gate().state is WakeState.ASLEEP
        assert await fetch(f"http://{guest.ip}:8080/") is None
        await s.gate().ready()
        assert s.gate().state is WakeState.READY
        assert await fetch(f"http://{guest.ip}:8080/") == "wiki (vmid 101)\n"
        assert s.tasks() == [("vzstart", "101")]
        assert s.manager.stats.wakes_ok == 1


async def test_200_concurrent_requests_cause_one_start_task(
    lab_server: LabServer, stack: StackFactory
) -> None:
    guest = add_guest(lab_server, 102, "qemu", "game")
    async with stack([idle_route("game")]) as s:
        results = await asyncio.gather(*(s.gate().ready() for _ in range(200)))
        assert results == [None] * 200
        assert s.tasks("start") == [("qmstart", "102")]
        assert await fetch(f"http://{guest.ip}:8080/healthz") == "ok"


@pytest.mark.parametrize(
    ("method", "kind", "asleep", "tasks"),
    [
        ("shutdown", "lxc", "stopped", ["vzstart", "vzshutdown", "vzstart"]),
        ("stop", "qemu", "stopped", ["qmstart", "qmstop", "qmstart"]),
        ("suspend", "qemu", "paused", ["qmstart", "qmsuspend", "qmresume"]),
        ("suspend", "lxc", "suspended", ["vzstart", "vzsuspend", "vzresume"]),
        ("hibernate", "qemu", "hibernated", ["qmstart", "qmsuspend", "qmstart"]),
    ],
)
async def test_each_stop_method_sleeps_the_guest_and_the_next_request_wakes_it(
    lab_server: LabServer,
    stack: StackFactory,
    method: str,
    kind: str,
    asleep: str,
    tasks: list[str],
) -> None:
    guest = add_guest(lab_server, 103, kind, "svc")
    url = f"http://{guest.ip}:8080/"
    async with stack([idle_route("svc", timeout=f"{IDLE_S}s", stop_method=method)]) as s:
        gate = s.gate()
        await gate.ready()
        assert await fetch(url) == "svc (vmid 103)\n"
        await wait_for(lambda: gate.state is WakeState.ASLEEP, 10, f"the idle {method}")
        assert lab_server.history(103)[-1] == asleep
        assert await fetch(url) is None
        await gate.ready()
        assert await fetch(url) == "svc (vmid 103)\n"
        assert [t for t, _ in s.tasks()] == tasks
        assert s.manager.stats.idle_stops == 1


async def test_shutdown_of_a_guest_that_ignores_it_falls_back_to_stop(
    lab_server: LabServer, stack: StackFactory
) -> None:
    add_guest(lab_server, 104, "qemu", "stubborn", shutdown_time_s=30)
    route = idle_route("stubborn", timeout=f"{IDLE_S}s", shutdown_timeout="1s")
    async with stack([route]) as s:
        await s.gate().ready()
        await wait_for(lambda: s.gate().state is WakeState.ASLEEP, 10, "the forced stop")
        assert lab_server.cluster.guests[104].status == "stopped"
        assert s.manager.stats.idle_stop_failures == 0


async def test_readiness_by_http_path(lab_server: LabServer, stack: StackFactory) -> None:
    web = add_guest(lab_server, 105, "lxc", "api")
    # Port 9000 of "echo" is a raw TCP echo service: a TCP connect succeeds, HTTP never does.
    add_guest(lab_server, 106, "lxc", "echo", tcp_ports=(9000,))
    routes = [
        idle_route("api", ready={"http": "/healthz"}),
        idle_route("echo", port=9000, wake_timeout="1s", ready={"http": "/"}),
    ]
    async with stack(routes) as s:
        await s.gate(0).ready()
        assert await fetch(f"http://{web.ip}:8080/healthz") == "ok"
        with pytest.raises(WakeTimeout):
            await s.gate(1).ready()
        assert lab_server.cluster.guests[106].status == "running"  # up, but not HTTP-ready
        assert s.gate(1).state is WakeState.FAILED


async def test_dependencies_start_first_in_order(
    lab_server: LabServer, stack: StackFactory
) -> None:
    app = add_guest(lab_server, 110, "lxc", "app")
    add_guest(lab_server, 111, "qemu", "db")
    add_guest(lab_server, 112, "lxc", "cache")
    routes = [idle_route("app", depends_on=["db", "cache"])]
    async with stack(routes) as s:
        await s.gate().ready()
        assert s.tasks("start") == [("qmstart", "111"), ("vzstart", "112"), ("vzstart", "110")]
        # Each dependency was running before the next one began to start.
        for before, after in itertools.pairwise((111, 112, 110)):
            running_at = when(lab_server, before, "running")
            assert running_at <= when(lab_server, after, "starting")
        assert await fetch(f"http://{app.ip}:8080/") == "app (vmid 110)\n"
        assert [lab_server.cluster.guests[v].status for v in (110, 111, 112)] == ["running"] * 3


async def test_a_failed_start_reports_the_task_error_and_opens_the_circuit(
    lab_server: LabServer, stack: StackFactory
) -> None:
    add_guest(lab_server, 120, "qemu", "broken")
    lab_server.fail_start(120, "start failed: no bootable disk")
    async with stack([idle_route("broken", retry_after="30s")]) as s:
        with pytest.raises(WakeError) as caught:
            await s.gate().ready()
        assert caught.value.message == "start failed: no bootable disk"
        assert s.gate().state is WakeState.FAILED
        for _ in range(10):
            with pytest.raises(WakeError) as again:
                await s.gate().ready()
            assert again.value.message == "start failed: no bootable disk"
            assert 0 < again.value.retry_after_s <= 30
        assert s.tasks("start") == [("qmstart", "120")]
        assert s.manager.stats.wake_failures == 1


async def test_a_guest_stopped_outside_pxproxy_is_woken_by_the_next_request(
    lab_server: LabServer, stack: StackFactory
) -> None:
    guest = add_guest(lab_server, 130, "lxc", "wiki")
    async with stack([idle_route("wiki")]) as s:
        await s.gate().ready()
        upid = await s.client.guest_action("lxc", "pve1", 130, "stop")
        assert (await s.client.wait_task(upid, 10)).ok
        await wait_for(lambda: s.gate().state is WakeState.ASLEEP, 10, "the external stop")
        await s.gate().ready()
        assert await fetch(f"http://{guest.ip}:8080/") == "wiki (vmid 130)\n"
        assert s.tasks() == [("vzstart", "130"), ("vzstop", "130"), ("vzstart", "130")]


async def test_a_guest_started_outside_pxproxy_is_ready_without_a_start(
    lab_server: LabServer, stack: StackFactory
) -> None:
    add_guest(lab_server, 131, "qemu", "vm")
    async with stack([idle_route("vm")]) as s:
        assert s.gate().state is WakeState.ASLEEP
        upid = await s.client.guest_action("qemu", "pve1", 131, "start")
        assert (await s.client.wait_task(upid, 10)).ok
        await wait_for(lambda: s.gate().state is WakeState.READY, 10, "the external start")
        await s.gate().ready()
        assert s.tasks("start") == [("qmstart", "131")]


async def test_proxmox_gone_mid_wake_is_settled_by_the_next_poll(
    lab_server: LabServer, stack: StackFactory
) -> None:
    """The API goes away while the start task runs; the guest boots on regardless. Once
    Proxmox answers again, the route follows the poll to ready, without a second start."""
    guest = add_guest(lab_server, 140, "lxc", "wiki", boot_time_s=1.0)
    relay = Relay(lab_server.port)
    await relay.mend()
    try:
        async with stack([idle_route("wiki", retry_after="1h")], url=relay.url) as s:
            request = asyncio.create_task(s.gate().ready())
            await wait_for(lambda: "starting" in lab_server.history(140), 10, "the start task")
            await relay.cut()
            with pytest.raises(WakeError) as caught:
                await request
            assert caught.value.message == OUTCOME_UNKNOWN
            await wait_for(lambda: guest.status == "running", 10, "the boot to finish")
            await wait_for(
                lambda: not s.inventory.snapshot.clusters[CLUSTER].ok, 10, "a failed poll"
            )
            # Proxmox away: stale polls change nothing, and the open circuit refuses at once.
            assert s.gate().state is WakeState.FAILED
            with pytest.raises(WakeError, match="next poll"):
                await s.gate().ready()
            await relay.mend()
            await wait_for(lambda: s.gate().state is WakeState.READY, 10, "the settled state")
            await s.gate().ready()
            assert await fetch(f"http://{guest.ip}:8080/") == "wiki (vmid 140)\n"
            assert s.tasks() == [("vzstart", "140")]
            assert s.manager.stats.wakes_settled == 1
    finally:
        await relay.cut()
