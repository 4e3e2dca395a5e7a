"""The daemon: owns the pollers, the API listener and their shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from . import startup_summary
from .api.app import build_app, make_context
from .api.audit import AuditLog
from .api.handlers.guest_streams import setup_guest_streams
from .api.handlers.stats import setup_stats
from .api.listener import handler_kwargs as api_handler_kwargs
from .api.listener import head_limits as api_head_limits
from .audit.chained_file import AuditFileError
from .config.loader import ConfigError
from .config.models import ClusterConfig, Config, is_loopback_host, split_address
from .inventory.address_policy import AddressPolicy
from .inventory.ip_resolution import IpResolver
from .inventory.node_aliases import node_aliases
from .inventory.poller import ClusterPoller, PollSettings
from .inventory.seen_records import SeenGuests, remembered_addresses
from .inventory.store import Inventory
from .listeners.bind_errors import listening
from .listeners.serve import GuardedListener, listen
from .metrics import Metrics
from .proxy.http import HttpProxy
from .proxy.routes import RouteTable
from .proxy.tcp import TcpProxy
from .pve.client import PveClient
from .shutdown import Stopping
from .state.memory_store import MemoryStore
from .state.opening import open_store
from .state.store import SavedState, StateError
from .state.writer import StateWriter
from .wake.contract import Gate, WakeState
from .wake.manager import DependencyCycleError, WakeManager
from .wake.power import PvePowerControl

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
        node_aliases=node_aliases(config.nodes, name),
        on_poll=metrics.on_poll if metrics else None,
        on_rejected=metrics.on_rejected if metrics else None,
        clock=clock,
    )
    return poller, client


FIRST_POLL_WAIT_S = 15.0
# After shutdown_grace, cancelled handlers get this long to finish their cleanup.
DRAIN_EXTRA_S = 1.0


class Daemon:
    def __init__(self, config: Config, *, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.inventory = Inventory()
        self.metrics = Metrics()
        # One stop signal for the API's streams and the proxy's long exchanges.
        self.stopping = Stopping()
        names = config.cluster_names()
        self.metrics.watch_inventory(lambda: self.inventory.snapshot, lambda: names)
        self.pollers: list[ClusterPoller] = []
        self._clients: dict[str, PveClient] = {}
        for name, cluster in zip(names, config.proxmox, strict=True):
            poller, client = make_poller(name, cluster, self.inventory, config, self.metrics)
            self.pollers.append(poller)
            self._clients[name] = client
        self._tasks: list[asyncio.Task[None]] = []
        self._summaries = startup_summary.ClusterSummaries(self.inventory, self._clients)
        self._api_runner: web.AppRunner | None = None
        self._proxy_runner: web.BaseRunner | None = None
        self._listeners: list[GuardedListener] = []
        self.wake: WakeManager | None = None
        http_routes = [r for r in config.routes if r.host]
        self.http_proxy = (
            HttpProxy(
                RouteTable(config.routes),
                self.inventory,
                self._gate,
                config.proxy,
                self.metrics,
                stopping=self.stopping,
            )
            if http_routes
            else None
        )
        tcp_routes = [(i, r) for i, r in enumerate(config.routes) if r.listen]
        self.tcp_proxy = (
            TcpProxy(
                tcp_routes,
                self.inventory,
                self._gate,
                connect_timeout_s=config.proxy.connect_timeout,
                hooks=self.metrics,
            )
            if tcp_routes
            else None
        )
        self.audit: AuditLog | None = None  # opened by start()
        self.api_port: int | None = None
        self.proxy_port: int | None = None
        self.state: StateWriter | None = None  # opened by start()
        self._saved = SavedState()

    def _gate(self, route_index: int) -> Gate:
        if self.wake is None:
            raise RuntimeError("idle-watch is not started")
        return self.wake.gate_for(route_index)

    def _note_power_action(self, guest_ref: str, action: str) -> None:
        if self.wake is not None:
            self.wake.note_power_action(guest_ref, action)

    def _route_states(self) -> dict[int, WakeState]:
        return dict(self.wake.states()) if self.wake is not None else {}

    def _route_gate(self, route_index: int) -> Gate | None:
        # The API's wake endpoint; None (a 503) until idle-watch has started.
        return self.wake.gate_for(route_index) if self.wake is not None else None

    async def start(self) -> None:
        """API first (so /health answers at once), then polling, idle-watch and the proxies."""
        startup_summary.log_start(self.config_path, self.config.cluster_names(), self.config.routes)
        host, port = split_address(self.config.listen.api)
        loopback = is_loopback_host(host)
        if not self.config.api.tokens and not loopback:
            log.warning(
                "no api.tokens configured and the API listens on %s: only /health will answer", host
            )
        try:
            self.audit = AuditLog.open(self.config.audit.path)
        except AuditFileError as exc:
            raise ConfigError(f"audit.path: {exc}") from None
        ctx = make_context(
            self.config,
            self.inventory,
            self.metrics,
            loopback,
            self._route_states,
            clients=self._clients,
            stopping=self.stopping,
            route_gate=self._route_gate,
            note_power_action=self._note_power_action,
            audit=self.audit,
        )
        app = build_app(ctx, setup=[setup_stats, setup_guest_streams])
        self._api_runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.config.shutdown_grace,
        )
        await self._api_runner.setup()
        api = self.config.api
        listener = await listening(
            "listen.api",
            self.config.listen.api,
            listen(
                self._api_runner,
                host,
                port,
                name="api",
                limits=api_head_limits(api),
                handler=api_handler_kwargs(api),
            ),
        )
        self._listeners.append(listener)
        self.api_port = listener.port
        log.info("pxproxy API listening on %s:%s", host, self.api_port)
        self._saved = await self._open_state()
        for poller in self.pollers:
            self._tasks.append(asyncio.create_task(poller.run(), name=f"poll:{poller.name}"))
        self._summaries.start()
        if self.config.routes:
            await self._start_routing()
        self._log_listeners()

    def _log_listeners(self) -> None:
        api_host, _ = split_address(self.config.listen.api)
        proxy_host, _ = split_address(self.config.listen.proxy)
        tcp = {}
        if self.tcp_proxy is not None:
            for index, (host, port) in self.tcp_proxy.bound_addresses().items():
                tcp[startup_summary.route_name(self.config.routes[index])] = f"{host}:{port}"
        startup_summary.log_listeners(
            f"{api_host}:{self.api_port}",
            f"{proxy_host}:{self.proxy_port}" if self.proxy_port is not None else None,
            tcp,
        )

    async def _open_state(self) -> SavedState:
        """The state store (pxproxy/state/): what the last run left, and its writer. A store
        that cannot be used was already turned into a WARNING and a memory store."""
        store = await open_store(self.config.state)
        try:
            saved = await store.load()
        except StateError as exc:
            log.warning("%s; running without persistence", exc)
            await store.close()
            store, saved = MemoryStore(), SavedState()
        interval = self.config.state.activity_interval
        self.state = StateWriter(store, saved, activity_interval_s=interval)
        for poller in self.pollers:
            poller.resolver.remember(remembered_addresses(saved.guests, poller.name))
        self.state.add_source(SeenGuests(self.inventory, saved.guests))
        self.state.start()
        return saved

    async def _start_routing(self) -> None:
        # Routes to one guest by name and by vmid share a waker only if refs resolve when
        # the manager is built, and the first request needs addresses: give the first poll
        # cycle (resources and address resolution) a moment.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_POLL_WAIT_S):
                await asyncio.gather(*(p.first_cycle.wait() for p in self.pollers))
        try:
            self.wake = WakeManager(
                self.config.routes,
                self.inventory,
                PvePowerControl(self._clients),
                observer=self.metrics,
            )
        except DependencyCycleError as exc:
            raise ConfigError(f"routes: {exc}") from None
        await self.wake.start(self._saved, status=self._clients)
        if self.state is not None:
            self.state.add_source(self.wake)
        if self.http_proxy is not None:
            host, port = split_address(self.config.listen.proxy)
            self._proxy_runner = self.http_proxy.make_runner(
                shutdown_timeout=self.config.shutdown_grace
            )
            await self._proxy_runner.setup()
            listener = await listening(
                "listen.proxy",
                self.config.listen.proxy,
                listen(
                    self._proxy_runner,
                    host,
                    port,
                    name="proxy",
                    limits=self.http_proxy.head_limits(),
                    handler=self.http_proxy.handler_kwargs(),
                ),
            )
            self._listeners.append(listener)
            self.proxy_port = listener.port
            log.info("pxproxy proxy listening on %s:%s", host, self.proxy_port)
        if self.tcp_proxy is not None:
            await self.tcp_proxy.start()

    async def stop(self) -> None:
        """Drain, then stop. At once: stop accepting, and end follow streams, WebSockets, execs
        and requests held for a wake, each with its proper last word. Requests in flight get
        `shutdown_grace` to finish; then idle-watch, polling and the Proxmox sessions stop."""
        self.stopping.set()
        grace = self.config.shutdown_grace
        started = time.monotonic()
        await self._stop_listening()
        drains = [self._drain_runner(self._proxy_runner), self._drain_runner(self._api_runner)]
        if self.tcp_proxy is not None:
            drains.append(self.tcp_proxy.close(grace))
        try:
            # aiohttp waits the grace, then cancels handlers and may wait as long again for
            # them: this bound keeps the whole stop within what a service manager allows.
            async with asyncio.timeout(grace + DRAIN_EXTRA_S):
                await asyncio.gather(*drains)
        except TimeoutError:
            log.warning("connections still open %gs after the grace period: closed", DRAIN_EXTRA_S)
        self._proxy_runner = self._api_runner = None
        if self.http_proxy is not None:
            await self.http_proxy.close()
        if self.wake is not None:
            await self.wake.stop()
        if self.state is not None:
            await self.state.stop()  # after idle-watch: its last activity is saved too
        await self._summaries.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for client in self._clients.values():
            await client.close()
        if self.audit is not None:
            self.audit.close()
        log.info("stopped after %.1fs", time.monotonic() - started)

    async def _stop_listening(self) -> None:
        # Only stop accepting: the runners close the open connections as they drain.
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    @staticmethod
    async def _drain_runner(runner: web.BaseRunner | None) -> None:
        # aiohttp waits up to the runner's shutdown_timeout (the grace) for handlers in
        # flight, then cancels them; the streams have ended themselves by then.
        if runner is not None:
            await runner.cleanup()

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                # A second signal: the operator does not want to wait for the drain.
                log.warning("second %s: exiting at once", signal.Signals(signum).name)
                logging.shutdown()
                os._exit(128 + signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            # Inside the try: a start that fails (a port in use, a config error found late)
            # still stops what it started, so no session or task is left behind.
            await self.start()
            await stop.wait()
            log.info(
                "shutting down: streams end now, requests in flight get %gs",
                self.config.shutdown_grace,
            )
        finally:
            await self.stop()
