"""The daemon: owns the services (pxproxy/services.py), the listeners and their shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path

from aiohttp import web

from . import startup_summary
from .api.app import build_app, make_context
from .api.audit import AuditLog
from .api.auth import TokenAuthority
from .api.handlers import CONTEXT
from .api.listener import handler_kwargs as api_handler_kwargs
from .api.listener import head_limits as api_head_limits
from .audit.chained_file import AuditFileError
from .config.companion import DnsConfig
from .config.loader import ConfigError, load_config
from .config.models import Config, RouteConfig, is_loopback_host, split_address
from .dns.server import DnsResponder
from .dns.source import LiveSource
from .events import producers
from .events.hub import EventHub
from .inventory.poller import ClusterPoller
from .inventory.seen_records import SeenGuests, remembered_addresses
from .inventory.store import Inventory
from .listeners.bind_errors import ListenError, listening
from .listeners.serve import GuardedListener, listen
from .metrics import Metrics
from .proxy.http import HttpProxy
from .proxy.listener import ProxyListener
from .proxy.relay import RelayCheck
from .proxy.tcp import TcpProxy
from .proxy.tls import ServerCertificates, TlsError
from .proxy.udp import UdpProxy
from .proxy.upstream import SnapshotUpstreams
from .proxy.workers import ProxyWorkers, WorkersCollector, WorkerSource
from .proxy.workers import secret as workers_secret
from .reload import ConfigStatus, ConfigWatch, plan
from .routing.endpoints import ProxyEndpoints, endpoints_for
from .routing.route_set import Declared, Route, RouteSet, RouteStore
from .services import Services, alias_sources, make_poller
from .shutdown import Stopping, cancel_and_wait
from .state.memory_store import MemoryStore
from .state.opening import open_store
from .state.store import SavedState, StateError
from .state.writer import StateWriter
from .wake.activity import ActivityWatch
from .wake.manager import DependencyCycleError, WakeManager, check_routes
from .wake.stats import BeforeStopCollector
from .webhooks.collector import WebhooksCollector
from .webhooks.service import Webhooks

log = logging.getLogger(__name__)

__all__ = ["Daemon", "alias_sources", "make_poller"]


# After shutdown_grace, cancelled handlers get this long to finish their cleanup.
DRAIN_EXTRA_S = 1.0


class Daemon:
    def __init__(
        self, config: Config, *, config_path: Path | None = None, log_format: str = "text"
    ) -> None:
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
            self.services = Services(
                config,
                self.inventory,
                self.metrics,
                on_declared=self.declare,
                audit=lambda: self.audit,  # opened by start(), before idle-watch starts
            )
        except DependencyCycleError as exc:
            raise ConfigError(f"routes: {exc}") from None
        self.wake: WakeManager = self.services.wake
        self._clients = self.services.clients
        self._summaries = startup_summary.ClusterSummaries(self.inventory, self._clients)
        self._api_runner: web.AppRunner | None = None
        self._proxy_started = False
        self._listeners: list[GuardedListener | ProxyListener] = []
        # The effective routes (the config's, then guests' notes'), swapped whole; idle-watch
        # follows every new set first, so a gate exists before the proxy routes to it.
        self.routes = RouteStore()
        self.routes.on_change(lambda routes: self.wake.update(routes.configs))
        # Live events (GET /api/v1/events, webhooks) from the polls, idle-watch and route set.
        self.events = EventHub()
        producers.connect(self.events, self.inventory, self.wake.news, self.routes)
        # Webhooks read the hub like any reader; a reload replaces them (_replace_webhooks).
        self.webhooks = Webhooks(config.webhooks, self.events, self._guest_info)
        self.metrics.registry.register(WebhooksCollector(lambda: self.webhooks.senders))
        self._declared: dict[str, tuple[Declared, ...]] = {}
        self.routes.reserved = _own_ports(config)
        self.routes.policy = config.notes
        self.routes.publish(config.routes, ())
        self.http_proxy = HttpProxy(
            lambda: self.routes.current.table,
            SnapshotUpstreams(self.inventory),
            self.wake.gate_for,
            config.proxy,
            self.metrics,
            stopping=self.stopping,
        )
        self.tcp_proxy = TcpProxy(
            self.inventory,
            self.wake.gate_for,
            routes=[r.config for r in self.routes.current.tcp()],
            connect_timeout_s=config.proxy.connect_timeout,
            hooks=self.metrics,
            key_for=self._listen_key,
        )
        self.udp_proxy = UdpProxy(
            self.inventory,
            self.wake.gate_for,
            routes=[r.config for r in self.routes.current.udp()],
            stats=self.metrics.udp,
            key_for=self._listen_key,
        )
        self._proxy_listener: ProxyListener | None = None
        self._endpoints = ProxyEndpoints()  # worked out once the listeners are open
        self._proxy_listen: str | None = None  # the address it listens on
        self._reload_lock = asyncio.Lock()
        self._reload_errors: tuple[str, ...] = ()
        self._listen_errors: tuple[str, ...] = ()  # listeners of the route set not bound
        self._restart_needed: tuple[str, ...] = ()  # changed in the file, kept until a restart
        self._dns_error: str | None = None  # new DNS settings that could not be bound
        self._dns_settings: DnsConfig | None = None  # those of the running responder
        self._route_kick = asyncio.Event()
        self._route_task: asyncio.Task[None] | None = None
        self._watch: ConfigWatch | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self._api_app: web.Application | None = None
        self.reloads = 0  # applied reloads, for tests and the log
        self.dns: DnsResponder | None = None  # started by start() when `dns:` is set
        # Activity another proxy carries (Traefik's metrics, guests' own counters).
        self.activity = ActivityWatch(
            self.routes,
            self.inventory,
            self.wake.gate_for,
            lambda: self.config.integrations.traefik,
        )
        self.metrics.watch_dns(lambda: self.dns.counters if self.dns is not None else None)
        self.metrics.registry.register(BeforeStopCollector(lambda: self.wake.stats))
        self.audit: AuditLog | None = None  # opened by start()
        self.api_port: int | None = None
        self.proxy_port: int | None = None
        self.state: StateWriter | None = None  # opened by start()
        self.certificates: ServerCertificates | None = None  # proxy.tls, loaded by start()
        self._tls_generation = 0  # bumped by every certificate reload, for the workers
        # proxy.workers above 1: the other processes on the proxy port, and the loopback
        # listener that serves them what only the daemon decides (proxy/relay.py).
        self.workers: ProxyWorkers | None = None
        self._relay_listener: ProxyListener | None = None
        if config.proxy.workers > 1:
            self.workers = ProxyWorkers(
                config.proxy.workers - 1,
                WorkerSource(
                    table=lambda: self.routes.current.table,
                    routes=lambda: [r.config for r in self.routes.current.routes],
                    gates=self.wake.gate_for,
                    upstreams=self.http_proxy.upstreams,
                    proxy=lambda: self.config.proxy,
                    listen=self._proxy_bound,
                    tls_generation=lambda: self._tls_generation,
                ),
                log_format=log_format,
            )
            self.metrics.proxy_collector.others = self.workers.stats
            self.metrics.registry.register(WorkersCollector(self.workers))

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
        await self._load_certificates()
        self.webhooks.start()  # before polling and idle-watch: their first events go out too
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
            routes=self.routes,
            endpoints=self.endpoints,
            config_status=self.config_status,
            activity_of=self.activity.describe,
            proxy_workers=self.workers.describe if self.workers is not None else None,
            events=self.events,
            webhooks=lambda: self.webhooks.describe(),  # the ones running now
        )
        app = self._api_app = build_app(ctx)
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
        self.activity.start()  # after idle-watch: it signals idle-watch's wakers
        if self.state is not None:
            # Only now: a save before idle-watch is a source would delete its records.
            self.state.add_source(self.wake)
            self.state.start()
        self._summaries.start()
        await self._start_routing()
        await self._start_workers()
        await self._start_dns(self.config.dns, strict=True)
        self._route_task = asyncio.create_task(self._follow_routes(), name="route-set")
        if self.config_path is not None:
            self._watch = ConfigWatch(self.config_path, self._reload_from_watch)
            self._watch.start()
        self._log_listeners()

    async def _replace_webhooks(self) -> None:
        """The reloaded `webhooks:`: the new ones subscribe before the old ones let go, so no
        event is missed or sent twice; the old ones get their short drain."""
        old = self.webhooks
        self.webhooks = old.successor(self.config.webhooks)
        self.webhooks.start()
        await old.stop()

    def _guest_info(self, ref: str) -> tuple[str, str] | None:
        """A webhook's guest (cluster:vmid) by name and node, if the inventory has it."""
        found = self.inventory.snapshot.lookup_ref(ref).guests
        return (found[0].name, found[0].node) if len(found) == 1 else None

    def _log_listeners(self) -> None:
        api_host, _ = split_address(self.config.listen.api)
        proxy_host, _ = split_address(self.config.listen.proxy)
        names = {r.config.listen: r.name for r in self.routes.current.tcp()}
        tcp = {
            names.get(listen, listen): f"{host}:{port}"
            for listen, (host, port) in self.tcp_proxy.bound_addresses().items()
        }
        udp_names = {r.config.listen: r.name for r in self.routes.current.udp()}
        tcp.update(
            (udp_names.get(listen, f"udp:{listen}"), f"{host}:{port}")
            for listen, (host, port) in self.udp_proxy.bound_addresses().items()
        )
        startup_summary.log_listeners(
            f"{api_host}:{self.api_port}",
            f"{proxy_host}:{self.proxy_port}" if self.proxy_port is not None else None,
            tcp,
        )

    def _listen_key(self, route: RouteConfig) -> str:
        """How a bind error names a TCP route: its key path in the config, or its guest's."""
        for index, configured in enumerate(self.config.routes):
            if configured == route:
                return f"routes[{index}].listen"
        owner = next((r.owner for r in self.routes.current.routes if r.config == route), None)
        return f"the notes of {owner}: route listen" if owner else f"route {route.listen}"

    def endpoints(self) -> ProxyEndpoints:
        """Where other proxies reach pxproxy's listeners now (ports as bound). Read on every
        DNS query: worked out when the listeners change, not here."""
        return self._endpoints

    def _refresh_endpoints(self) -> None:
        http = None
        if self._proxy_listener is not None and self._proxy_listen is not None:
            host, _ = split_address(self._proxy_listen)
            http = (host, self.proxy_port or 0)
        self._endpoints = endpoints_for(
            self.config.integrations.proxy_address,
            http,
            self.tcp_proxy.bound_addresses(),
            self.udp_proxy.bound_addresses(),
            tls=self.certificates is not None,
        )

    async def _load_certificates(self) -> None:
        """The proxy listener's certificates (proxy.tls), read off the event loop."""
        tls = self.config.proxy.tls
        if tls is None:
            return
        try:
            loaded = await asyncio.to_thread(ServerCertificates.prepare, tls)
        except TlsError as exc:
            raise ConfigError(f"proxy.tls: {exc}") from None
        self.certificates = ServerCertificates(loaded)
        log.info("proxy TLS: %s", self.certificates.describe())
        for warning in self.certificates.warnings():
            log.warning("%s", warning)

    async def _reload_certificates(self, new: Config) -> None:
        tls = new.proxy.tls
        if self.certificates is None or tls is None:
            return  # TLS turned on or off: a restart (reload.plan says so)
        try:
            loaded = await asyncio.to_thread(ServerCertificates.prepare, tls)
        except TlsError as exc:
            self._reload_errors = (str(exc),)
            log.error("certificate reload failed; the running ones stay: %s", exc)
            return
        self.certificates.swap(loaded)  # new handshakes get them; open connections go on
        self._tls_generation += 1  # the workers load them too
        log.info("proxy TLS reloaded: %s", self.certificates.describe())
        for warning in self.certificates.warnings():
            log.warning("%s", warning)

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
        self._proxy_started = True
        await self._sync_proxy_listener(strict=True)
        await self.tcp_proxy.start()
        await self.udp_proxy.start()
        self._refresh_endpoints()

    async def _start_workers(self) -> None:
        if self.workers is None:
            return
        key = workers_secret()
        self._relay_listener = await self.http_proxy.listen("127.0.0.1", 0, relay=RelayCheck(key))
        port = self._relay_listener.port
        assert port is not None
        await self.workers.start(("127.0.0.1", port), key)
        log.info("pxproxy proxy: %d worker processes besides this one", self.workers.count)

    def _proxy_bound(self) -> tuple[str, int] | None:
        """Where the proxy listener is bound now, for the workers to bind beside it."""
        if self._proxy_listen is None or self.proxy_port is None:
            return None
        return split_address(self._proxy_listen)[0], self.proxy_port

    async def _sync_proxy_listener(self, *, strict: bool = False) -> str | None:
        """The proxy listener exists while there are HTTP routes, on listen.proxy: opened
        when the first appears or the address changes, its socket closed otherwise (the
        connections it accepted go on). A new address that cannot be bound keeps the old
        listener: the error is returned (shown in /health) and the next route change or
        reload tries again."""
        wanted = self.config.listen.proxy if self.routes.current.http() else None
        if wanted == self._proxy_listen:
            return None
        old = self._proxy_listen
        if wanted is None or not self._proxy_started:
            self._close_proxy_listener()
            return None
        try:
            listener = await self._open_proxy_listener(wanted)
        except ListenError as exc:
            if strict:
                raise
            if old is None or not _same_port(old, wanted):
                log.error("%s; the proxy stays on %s", exc, old or "no address")
                return str(exc)
            # One port on another address of this host (0.0.0.0 -> 127.0.0.1): ours holds
            # it. Free it and try again; failing that, go back to where it was.
            self._close_proxy_listener()
            try:
                listener = await self._open_proxy_listener(wanted)
            except ListenError as again:
                log.error("%s; going back to %s", again, old)
                with contextlib.suppress(ListenError):
                    self._adopt_proxy_listener(await self._open_proxy_listener(old), old)
                return str(again)
        self._close_proxy_listener()
        self._adopt_proxy_listener(listener, wanted)
        return None

    async def _open_proxy_listener(self, address: str) -> ProxyListener:
        host, port = split_address(address)
        return await listening(
            "listen.proxy",
            address,
            self.http_proxy.listen(
                host,
                port,
                tls=self.certificates.context if self.certificates else None,
                reuse_port=self.workers is not None,
            ),
        )

    def _adopt_proxy_listener(self, listener: ProxyListener, address: str) -> None:
        self._listeners.append(listener)
        self._proxy_listener, self._proxy_listen = listener, address
        self.proxy_port = listener.port
        host, _ = split_address(address)
        log.info("pxproxy proxy listening on %s:%s", host, self.proxy_port)

    def _close_proxy_listener(self) -> None:
        if self._proxy_listener is None:
            return
        self._proxy_listener.close()
        self._listeners.remove(self._proxy_listener)
        log.info("pxproxy proxy stopped listening on %s", self._proxy_listen)
        self._proxy_listener, self._proxy_listen, self.proxy_port = None, None, None

    async def _start_dns(self, settings: DnsConfig | None, *, strict: bool = False) -> str | None:
        """A responder on `settings` (None: DNS off); the bind error, if any, when not strict."""
        if settings is None:
            return None
        source = LiveSource(
            lambda: self.inventory.snapshot,
            lambda: self.routes.current,
            self.wake.gate_for,
            self.endpoints,
        )
        responder = DnsResponder(settings, source)
        try:
            await listening("dns.listen", settings.listen, responder.start())
        except ListenError as exc:
            if strict:
                raise
            log.error("%s", exc)
            return str(exc)
        self.dns, self._dns_settings = responder, settings
        for host, port in responder.bound:
            shown = f"[{host}]" if ":" in host else host
            log.info("pxproxy DNS listening on %s:%s (zone %s)", shown, port, settings.zone)
        return None

    async def _restart_dns(self) -> None:
        """The config's DNS settings, when they are not what runs (a reload changed them,
        or an earlier change could not bind). The running responder frees its port first
        (the new one may want it); if the new one cannot bind, the running settings come
        back, and /health says so until a reload (a SIGHUP will do) binds the new ones."""
        wanted, running = self.config.dns, self._dns_settings
        if wanted == running and self._dns_error is None:
            return
        await self._stop_dns()
        error = await self._start_dns(wanted)
        self._dns_error = None
        if error is None:
            return
        if running is not None and await self._start_dns(running) is None:
            error += "; the DNS responder stays on its old settings"
        self._dns_error = error
        self.routes.reserved = _own_ports(self.config, self._dns_settings)

    async def _stop_dns(self) -> None:
        responder, self.dns, self._dns_settings = self.dns, None, None
        if responder is not None:
            await responder.close()

    # ------------------------------------------------------------------ routes and reloads

    def declare(self, cluster: str, declared: tuple[Declared, ...]) -> None:
        """What one cluster's tagged guests declare now (the notes watcher calls this)."""
        if self._declared.get(cluster) == declared:
            return
        self._declared[cluster] = declared
        self._route_kick.set()

    def _declared_now(self) -> list[Declared]:
        return [d for cluster in sorted(self._declared) for d in self._declared[cluster]]

    async def _follow_routes(self) -> None:
        while True:
            await self._route_kick.wait()
            self._route_kick.clear()
            try:
                async with self._reload_lock:
                    await self._apply_routes()
            except Exception:  # a bug in one round must not end route following
                log.exception("applying the route set failed")

    async def _apply_routes(self) -> None:
        """Publish the merge of the config's routes and the notes', then follow it with the
        listeners. No depends_on cycle can come of it: the config's routes passed the cycle
        check, and notes may not declare depends_on (routing/notes.py)."""
        before = self.routes.current
        if self.routes.publish(self.config.routes, self._declared_now()):
            _log_route_changes(before, self.routes.current)
        # The proxy listener first: a TCP route may want the port it is leaving.
        proxy_error = await self._sync_proxy_listener()
        errors = await self.tcp_proxy.apply([r.config for r in self.routes.current.tcp()])
        errors += await self.udp_proxy.apply([r.config for r in self.routes.current.udp()])
        # Addresses that could not be bound: in /health until a later round binds them.
        self._listen_errors = (*errors, *([proxy_error] if proxy_error else []))
        self._refresh_endpoints()  # listeners, or integrations.proxy_address, may have changed

    def config_status(self) -> ConfigStatus:
        listen = (*self._listen_errors, *([self._dns_error] if self._dns_error else []))
        return ConfigStatus(self._reload_errors, listen, self._restart_needed)

    async def reload(self) -> bool:
        """Read the config file again and apply it, or keep the running one (errors in the
        log and /health). True when the new config was applied."""
        if self.config_path is None:
            log.warning("reload asked for, but no config file was given: nothing to read")
            return False
        async with self._reload_lock:
            if self.stopping.is_set():
                # A SIGHUP during the drain: nothing may open a listener after it closed.
                log.info("reload ignored: pxproxy is stopping")
                return False
            try:
                new = await asyncio.to_thread(load_config, str(self.config_path))
                check_routes(new.routes)
            except (ConfigError, DependencyCycleError) as exc:
                problems = getattr(exc, "problems", ())
                errors = [str(p) for p in problems] or [str(exc)]
                self._reload_errors = tuple(errors)
                log.error(
                    "config reload failed; the running config stays: %s",
                    "; ".join(errors),
                    extra={"errors": errors},
                )
                return False
            self._reload_errors = ()
            # On every reload, changed config or not: a renewal changes the files only.
            await self._reload_certificates(new)
            change = plan(self.config, new)
            self._restart_needed = change.restart
            if change.restart:
                log.warning(
                    "config reload: %s changed and only take effect on a restart",
                    ", ".join(change.restart),
                )
            if not change.changed:
                # A DNS change that could not bind before is tried again.
                await self._restart_dns()
                log.info("config reload: nothing to apply")
                return True
            self._apply_config(change.config)
            if "log_level" in change.changed:
                # Only when the file's level changed: a reload of anything else must not undo
                # `--log-level` (set on the root logger at start, as here).
                logging.getLogger().setLevel(change.config.log_level.upper())
            await self._restart_dns()
            if "webhooks" in change.changed:
                await self._replace_webhooks()
            await self._apply_routes()
            self.reloads += 1
            log.info(
                "config reloaded: %s", ", ".join(change.changed), extra={"changed": change.changed}
            )
            return True

    def _apply_config(self, config: Config) -> None:
        self.config = config
        self.routes.reserved = _own_ports(config, self._dns_settings)
        self.routes.policy = config.notes
        self.http_proxy.set_pages(config.proxy.pages.pages())  # read with the config
        for cluster in self.services.clusters:
            cluster.poller.set_extra_aliases(alias_sources(config))
        if self._api_app is not None:
            cell = self._api_app[CONTEXT]
            cell.ctx = dataclasses.replace(
                cell.ctx, config=config, authority=TokenAuthority(config.api.tokens)
            )

    async def _reload_from_watch(self) -> None:
        log.info("config file %s changed: reloading", self.config_path)
        await self.reload()

    def _reload_soon(self) -> None:
        log.info("SIGHUP: reloading %s", self.config_path)
        task = asyncio.create_task(self.reload(), name="config-reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def stop(self) -> None:
        """Drain, then stop. At once: stop accepting, and end follow streams, WebSockets, execs
        and requests held for a wake, each with its proper last word. Requests in flight get
        `shutdown_grace` to finish; then idle-watch, polling and the Proxmox sessions stop."""
        self.stopping.set()
        self.events.close()  # event streams end now, before the drain waits for them
        grace = self.config.shutdown_grace
        started = time.monotonic()
        if self._watch is not None:
            await self._watch.stop()
        for task in [self._route_task, *self._reloads]:
            await cancel_and_wait(task)
        await self._stop_listening()
        await self._stop_dns()
        # The stats hub ends its streams now (each with its last word), before the drain
        # waits for them; services.stop() below finds it closed.
        await self.services.stats.close()
        drains = [
            self.http_proxy.drain(grace),
            self._drain_runner(self._api_runner),
            self.tcp_proxy.close(grace),
            self.udp_proxy.close(grace),
        ]
        if self.workers is not None:
            drains.append(self.workers.stop(grace))
        try:
            # aiohttp waits the grace, then cancels handlers and may wait as long again for
            # them: this bound keeps the whole stop within what a service manager allows.
            async with asyncio.timeout(grace + DRAIN_EXTRA_S):
                await asyncio.gather(*drains)
        except TimeoutError:
            log.warning("connections still open %gs after the grace period: closed", DRAIN_EXTRA_S)
        self._api_runner = None
        if self._relay_listener is not None:
            self._relay_listener.close()  # only now: the workers relayed to it as they drained
        await self.http_proxy.close()
        await self.webhooks.stop()  # what is queued gets a short while to go out
        if self.state is not None:
            await self.state.stop()  # its last look at idle-watch is taken before it stops
        await self._summaries.stop()
        await self.activity.stop()  # before idle-watch, whose wakers it signals
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
        # A SIGHUP during the start is remembered (its default would end the process).
        hup = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, hup.set)
        try:
            # Inside the try: a start that fails (a port in use, a config error found late)
            # still stops what it started, so no session or task is left behind.
            await self.start()
            # Only now: a reload must not race the listeners start() opens. One that came
            # during the start runs now.
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
            if hup.is_set():
                self._reload_soon()
            await stop.wait()
            log.info(
                "shutting down: streams end now, requests in flight get %gs",
                self.config.shutdown_grace,
            )
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)


def _same_port(a: str, b: str) -> bool:
    port = split_address(a)[1]
    return port != 0 and port == split_address(b)[1]


def _log_route_changes(before: RouteSet, after: RouteSet) -> None:
    old = {r.name: r for r in before.routes}
    new = {r.name: r for r in after.routes}
    for name in sorted(new.keys() - old.keys()):
        log.info("route %s added (%s)", name, _origin(new[name]))
    for name in sorted(old.keys() - new.keys()):
        log.info("route %s removed (%s)", name, _origin(old[name]))
    for name in sorted(n for n in new.keys() & old.keys() if new[n] != old[n]):
        log.info("route %s changed (%s)", name, _origin(new[name]))
    known = set(before.problems)
    for problem in after.problems:
        if problem not in known:
            log.warning(
                "notes of %s (%s): %s",
                problem.name,
                problem.guest,
                problem.error,
                extra={"guest": problem.guest, "error": problem.error},
            )


def _origin(route: Route) -> str:
    return "config" if route.owner is None else f"notes of {route.owner}"


def _own_ports(config: Config, dns_running: DnsConfig | None = None) -> dict[int, str]:
    """pxproxy's own listening ports, which no guest's notes may take for a TCP or UDP route
    (the DNS responder's as configured, and as running when an unbindable change kept it)."""
    ports = {
        split_address(config.listen.api)[1]: "pxproxy's API listener",
        split_address(config.listen.proxy)[1]: "pxproxy's proxy listener",
    }
    for dns in (config.dns, dns_running):
        if dns is not None:
            ports[split_address(dns.listen)[1]] = "pxproxy's DNS responder"
    ports.pop(0, None)  # port 0: the kernel picks one, nothing to claim
    return ports
