"""The daemon: owns the services (pxproxy/services.py), the listeners and their shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

from aiohttp import web

from . import startup_summary
from .api.app import build_app, make_context
from .api.audit import AuditLog
from .api.listener import handler_kwargs as api_handler_kwargs
from .api.listener import head_limits as api_head_limits
from .audit.chained_file import AuditFileError
from .config.loader import ConfigError
from .config.models import Config, is_loopback_host, split_address
from .inventory.poller import ClusterPoller
from .inventory.seen_records import SeenGuests, remembered_addresses
from .inventory.store import Inventory
from .listeners.bind_errors import listening
from .listeners.serve import GuardedListener, listen
from .metrics import Metrics
from .proxy.http import HttpProxy
from .proxy.routes import RouteTable
from .proxy.tcp import TcpProxy
from .services import Services, alias_sources, make_poller
from .shutdown import Stopping
from .state.memory_store import MemoryStore
from .state.opening import open_store
from .state.store import SavedState, StateError
from .state.writer import StateWriter
from .wake.manager import DependencyCycleError, WakeManager

log = logging.getLogger(__name__)

__all__ = ["Daemon", "alias_sources", "make_poller"]


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
        try:
            # Every service, built at once: idle-watch too, whose refs resolve lazily.
            self.services = Services(config, self.inventory, self.metrics)
        except DependencyCycleError as exc:
            raise ConfigError(f"routes: {exc}") from None
        self.wake: WakeManager = self.services.wake
        self._clients = self.services.clients
        self._summaries = startup_summary.ClusterSummaries(self.inventory, self._clients)
        self._api_runner: web.AppRunner | None = None
        self._proxy_runner: web.BaseRunner | None = None
        self._listeners: list[GuardedListener] = []
        http_routes = [r for r in config.routes if r.host]
        self.http_proxy = (
            HttpProxy(
                RouteTable(config.routes),
                self.inventory,
                self.wake.gate_for,
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
                self.wake.gate_for,
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

    @property
    def pollers(self) -> list[ClusterPoller]:
        return [c.poller for c in self.services.clusters]

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
        services = self.services
        ctx = make_context(
            self.config,
            self.inventory,
            self.metrics,
            loopback,
            wake=self.wake,
            clients=self._clients,
            stopping=self.stopping,
            power=services.power,
            audit=self.audit,
            shells=services.shells,
            stats=services.stats,
        )
        app = build_app(ctx)
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
        saved = await self._open_state()
        # No wait for the first poll: refs resolve against the live snapshot as it comes.
        await self.services.start(saved)
        if self.state is not None:
            # Only now: a save before idle-watch is a source would delete its records.
            self.state.add_source(self.wake)
            self.state.start()
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
        for cluster in self.services.clusters:
            cluster.resolver.remember(remembered_addresses(saved.guests, cluster.name))
        self.state.add_source(SeenGuests(self.inventory, saved.guests))
        return saved

    async def _start_routing(self) -> None:
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
        # The stats hub ends its streams now (each with its last word), before the drain
        # waits for them; services.stop() below finds it closed.
        await self.services.stats.close()
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
        if self.state is not None:
            await self.state.stop()  # its last look at idle-watch is taken before it stops
        await self._summaries.stop()
        await self.services.stop()  # idle-watch, stats, shells, pollers, clients: in reverse
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
