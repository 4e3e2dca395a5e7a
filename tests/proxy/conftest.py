"""A running proxy in front of real lab guest servers (and hand-made upstreams), all on
127.0.0.0/8, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from pxproxy.config.models import ProxyConfig, RouteConfig
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.lab.guest_servers import GuestServers
from pxproxy.lab.state import LabCluster, LabGuest
from pxproxy.proxy.http import HttpProxy
from pxproxy.proxy.routes import RouteTable
from pxproxy.proxy.upstream import SnapshotUpstreams
from pxproxy.shutdown import Stopping
from pxproxy.wake.contract import AlwaysReady, Gate

from ..builders import make_guest

HOST = "127.0.0.1"
WIKI, BLOG, GAME = 48101, 48102, 48103


@dataclass
class RecordingMetrics:
    requests: list[tuple[str, int, float | None]] = field(default_factory=list)
    open: dict[str, int] = field(default_factory=dict)
    opened: int = 0

    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        self.requests.append((route, status, upstream_seconds))

    def connection_opened(self, route: str) -> None:
        self.opened += 1
        self.open[route] = self.open.get(route, 0) + 1

    def connection_closed(self, route: str) -> None:
        self.open[route] -= 1


@dataclass
class RunningProxy:
    proxy: HttpProxy
    url: str
    inventory: Inventory
    metrics: RecordingMetrics


def snapshot_guest(vmid: int, name: str, ips: Iterable[str]) -> Guest:
    return make_guest(vmid, name, cluster="lab", ips=tuple(ips))


def publish(inventory: Inventory, guests: Iterable[Guest]) -> None:
    inventory.publish(ClusterSnapshot.build("lab", guests, ()))


def routes(*specs: Mapping[str, Any]) -> tuple[RouteConfig, ...]:
    return tuple(RouteConfig.model_validate(s) for s in specs)


StartProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    """start_proxy(routes, guests, gates=None, stopping=None, **proxy_config) → a proxy on
    127.0.0.1:0."""
    stack = contextlib.AsyncExitStack()

    async def start(
        route_configs: tuple[RouteConfig, ...],
        guests: Iterable[Guest],
        gates: Mapping[int, Gate] | None = None,
        stopping: Stopping | None = None,
        **proxy_config: Any,
    ) -> RunningProxy:
        inventory = Inventory()
        publish(inventory, guests)
        metrics = RecordingMetrics()
        always = AlwaysReady()
        chosen = dict(gates or {})
        proxy = HttpProxy(
            RouteTable(route_configs),
            SnapshotUpstreams(inventory),
            lambda route: chosen.get(route_configs.index(route), always),
            ProxyConfig.model_validate(proxy_config),
            metrics,
            stopping=stopping,
        )
        stack.push_async_callback(proxy.close)
        listener = await proxy.listen(HOST, 0)
        stack.callback(listener.close)
        return RunningProxy(proxy, f"http://{HOST}:{listener.port}", inventory, metrics)

    async with stack:
        yield start


@dataclass
class Lab:
    cluster: LabCluster
    servers: GuestServers

    def guest(self, vmid: int) -> LabGuest:
        return self.cluster.guests[vmid]


@pytest.fixture
async def http_lab() -> AsyncIterator[Lab]:
    """Running lab guests serving HTTP on their own loopback addresses, port 8080: WIKI,
    BLOG and GAME (vmids unusual enough not to collide with other suites running at once)."""
    servers = GuestServers()
    cluster = LabCluster(runtime=servers)
    cluster.add_node("pve1")
    for vmid, name in ((WIKI, "wiki"), (BLOG, "blog"), (GAME, "game")):
        cluster.add_guest(vmid, "lxc", name, "pve1", status="running")
    await cluster.open()
    try:
        yield Lab(cluster, servers)
    finally:
        await cluster.close()
        await servers.close_all()


def lab_guests(lab: Lab) -> list[Guest]:
    return [snapshot_guest(g.vmid, g.name, (g.ip,)) for g in lab.cluster.guests.values()]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def upstream_app() -> AsyncIterator[Callable[[web.Application], Awaitable[int]]]:
    """serve(app) → the port of a hand-made upstream on 127.0.0.1."""
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    try:
        yield serve
    finally:
        for runner in runners:
            await runner.cleanup()


async def read_until(reader: asyncio.StreamReader, marker: bytes, timeout_s: float = 5) -> bytes:
    async with asyncio.timeout(timeout_s):
        return await reader.readuntil(marker)
