"""The daemon: owns the pollers, the API listener and their shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from aiohttp import web

from .api.app import build_app, make_context
from .config.models import ClusterConfig, Config, is_loopback_host, split_address
from .inventory.address_policy import AddressPolicy
from .inventory.ip_resolution import IpResolver
from .inventory.poller import ClusterPoller, PollSettings
from .inventory.store import Inventory
from .metrics import Metrics
from .pve.client import PveClient

log = logging.getLogger(__name__)


def alias_sources(config: Config) -> list[tuple[str, str]]:
    """(guest ref, alias) pairs from `guests:` and from the first label of route hosts."""
    pairs = [(ref, a.lower()) for ref, extra in config.guests.items() for a in extra.aliases]
    for route in config.routes:
        for host in route.host or ():
            if not host.startswith("*."):
                pairs.append((route.guest, host.split(".", 1)[0].lower()))
    return pairs


def make_poller(
    name: str,
    cluster: ClusterConfig,
    inventory: Inventory,
    config: Config,
    metrics: Metrics | None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ClusterPoller, PveClient]:
    client = PveClient(cluster)
    resolver = IpResolver(
        client,
        policy=AddressPolicy(cluster.ips),
        concurrency=cluster.resolve_concurrency,
        refresh_s=cluster.ip_refresh,
        clock=clock,
    )
    poller = ClusterPoller(
        name,
        client,
        resolver,
        inventory.publish,
        settings=PollSettings(cluster.poll_interval, cluster.backoff_max, cluster.node_refresh),
        extra_aliases=alias_sources(config),
        on_poll=metrics.on_poll if metrics else None,
        clock=clock,
    )
    return poller, client


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.inventory = Inventory()
        self.metrics = Metrics()
        names = config.cluster_names()
        self.metrics.watch_inventory(lambda: self.inventory.snapshot, lambda: names)
        self.pollers: list[ClusterPoller] = []
        self._clients: list[PveClient] = []
        for name, cluster in zip(names, config.proxmox, strict=True):
            poller, client = make_poller(name, cluster, self.inventory, config, self.metrics)
            self.pollers.append(poller)
            self._clients.append(client)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.api_port: int | None = None

    async def start(self) -> None:
        host, port = split_address(self.config.listen.api)
        loopback = is_loopback_host(host)
        if not self.config.api.tokens and not loopback:
            log.warning(
                "no api.tokens configured and the API listens on %s: only /health will answer", host
            )
        ctx = make_context(self.config, self.inventory, self.metrics, loopback)
        self._runner = web.AppRunner(build_app(ctx), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.api_port = self._bound_port(site)
        for poller in self.pollers:
            self._tasks.append(asyncio.create_task(poller.run(), name=f"poll:{poller.name}"))
        log.info("pxproxy API listening on %s:%s", host, self.api_port)

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int | None:
        server = site._server  # aiohttp keeps the asyncio server here
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for client in self._clients:
            await client.close()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            await self.stop()
