"""The HTTP reverse proxy: what each parsed request gets, decided once per request.

Requests are routed by their one authority (request.py) to a guest whose address is read from
the live snapshot, wait for (or wake) the guest through its gate, and are relayed both ways
with backpressure by an Exchange (exchange.py) on the connection's callbacks. This module owns
the listeners, the upstream pool, the background wakes and every Task the data path starts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, Protocol

from ..config.models import ProxyConfig, RouteConfig
from ..pages.document import Pages
from ..routing.route_set import upstream_prefix
from ..shutdown import Stopping
from ..wake.contract import ALWAYS_READY, Gate, WakeError, WakeState
from . import waiting
from .exchange import Exchange
from .headers import TrustedProxies
from .listener import ProxyListener, open_listener
from .loading_page import EVENTS_PATH
from .pool import UpstreamPool
from .relay import RELAY_BYTES, RELAY_FIELDS, RelayCheck
from .replies import Reply, problem
from .request import ClientRequest
from .routes import RouteMatch, RouteTable
from .server import ClientConnection, ProxyServer
from .tunnel import Tunnel
from .upstream import Upstream, Upstreams

__all__ = ["HttpProxy", "NoMetrics", "ProxyMetrics", "RouteMatch"]

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the metrics route label of requests for unknown hosts


class ProxyMetrics(Protocol):
    """What the proxy reports (proxy/stats.py keeps it as plain counters)."""

    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        """A request finished (for streams: when the stream ended). `upstream_seconds` is the
        time to the guest's response headers, None when no guest was asked."""

    def connection_opened(self, route: str) -> None:
        """A proxied exchange (request, stream or WebSocket) to a guest began."""

    def connection_closed(self, route: str) -> None: ...


class NoMetrics:
    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        return None

    def connection_opened(self, route: str) -> None:
        return None

    def connection_closed(self, route: str) -> None:
        return None


class RelayTarget(NamedTuple):
    """A worker's way to the daemon: its relay listener, and the secret it asks for."""

    upstream: Upstream
    secret: str


class HttpProxy:
    def __init__(
        self,
        routes: RouteTable | Callable[[], RouteTable],
        upstreams: Upstreams,
        gates: Callable[[RouteConfig], Gate],
        config: ProxyConfig,
        metrics: ProxyMetrics | None = None,
        stopping: Stopping | None = None,
    ) -> None:
        # The live table (read per request: reloads and guests' notes swap it), or a fixed one.
        self._table: Callable[[], RouteTable] = (
            (lambda: routes) if isinstance(routes, RouteTable) else routes
        )
        # Set when the daemon begins to stop: held requests, WebSockets and SSE end properly.
        self.stopping = stopping or Stopping()
        self.upstreams = upstreams
        self._gates = gates
        self.config = config
        self.metrics: ProxyMetrics = metrics or NoMetrics()
        self.trusted = TrustedProxies(config.trusted_proxies)
        self._health = waiting.HealthChecks(config.health_checks)
        # The loading and error pages' theme and template; a reload swaps them (set_pages).
        self.pages: Pages = config.pages.pages()
        self.heartbeat_s = waiting.HEARTBEAT_INTERVAL_S
        self.pool = UpstreamPool(
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        self.tunnels: set[Tunnel] = set()
        self._servers: list[ProxyServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # Background wakes started for browsers, one per route.
        self._wakes: dict[str, asyncio.Task[None]] = {}
        self._prefixes: dict[str | None, str] = {}
        self._closed = False
        self._watcher: asyncio.Task[None] | None = None
        # Set in a worker process (proxy/worker.py): where what it does not serve goes.
        self.relay: RelayTarget | None = None
        self.relay_pool: UpstreamPool | None = None  # connections to the relay listener

    # ------------------------------------------------------------------ lifecycle

    def server(self, *, scheme: str = "http", relay: RelayCheck | None = None) -> ProxyServer:
        """The connection state one listener shares; many listeners may be open at once
        (a listener moved to a new address leaves its old connections to finish)."""
        limits = self.config
        if relay is not None:
            # A head the client's limits admitted, plus what the worker adds to it.
            limits = limits.model_copy(
                update={
                    "max_headers": limits.max_headers + RELAY_FIELDS,
                    "max_header_size": limits.max_header_size + RELAY_BYTES,
                }
            )
        server = ProxyServer(self, limits, scheme=scheme, relay=relay)
        self._servers.append(server)
        if self._watcher is None:
            self._watcher = self.spawn(self._stop_when_stopping(), "pxproxy-proxy-stopping")
        return server

    async def listen(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
        relay: RelayCheck | None = None,
    ) -> ProxyListener:
        """A listening socket on host:port (pxproxy/proxy/listener.py); with `tls`, HTTPS;
        with `relay`, the daemon's listener for its workers (proxy/relay.py)."""
        server = self.server(scheme="http" if tls is None else "https", relay=relay)
        return await open_listener(
            server, host, port, spawn=self.spawn, tls=tls, reuse_port=reuse_port
        )

    async def _stop_when_stopping(self) -> None:
        await self.stopping.wait()
        for server in self._servers:
            server.stop()

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A Task of the data path's, owned here: close() cancels and awaits it."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, grace_s: float) -> None:
        """Let the open connections finish, up to `grace_s`, then cut the rest."""
        self.stopping.set()
        await asyncio.gather(*(server.drain(grace_s) for server in self._servers))

    async def close(self) -> None:
        self._closed = True
        for server in self._servers:
            for conn in list(server.connections):
                conn.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._wakes.clear()
        self._watcher = None
        self.pool.close()
        if self.relay_pool is not None:
            self.relay_pool.close()

    # ------------------------------------------------------------------ per request

    def dispatch(self, conn: ClientConnection, request: ClientRequest) -> None:
        """Answer `request`: the handler set on `conn` (before it starts, since an answer
        given at once ends the request and may begin the next pipelined one) gets its body."""
        host = request.authority.host
        match = self._table().match_name(host)  # already in routing form
        if match is None:
            reply = problem(
                404, "Not Found", f"no route for host {request.host!r}", host=request.host
            )
            self._answer(conn, UNMATCHED, reply, request, None)
            return
        gate = self._gates(match.route)
        path = request.path.split("?", 1)[0]
        if self.relay is not None and (
            gate.state is not WakeState.READY or path.startswith(waiting.INTERNAL_PREFIX)
        ):
            # A worker: what is not plainly forwarded is the daemon's to decide.
            exchange = Exchange(
                self, conn, request, match, ALWAYS_READY, health=False, relayed=True
            )
            conn.handler = exchange
            exchange.start()
            return
        if path.startswith(waiting.INTERNAL_PREFIX):
            # Nothing under /.pxproxy/ reaches a guest.
            if path == EVENTS_PATH and request.method == "GET":
                events = waiting.WakeEvents(
                    conn, gate, self.stopping, self.spawn, heartbeat_s=self.heartbeat_s
                )
                conn.handler = events
                self.metrics.request(match.name, 200, None)
                events.start()
                return
            reply = problem(404, "Not Found", f"no pxproxy endpoint {path}")
            self._answer(conn, match.name, reply, request, match.route)
            return
        health = self._health.matches(
            user_agent=waiting.header(request, "user-agent"), path=path, peer=request.peer
        )
        if gate.state is not WakeState.READY and not health:
            if self.stopping.is_set():
                reply = waiting.stopping_problem(guest=match.route.guest, host=request.host)
                self._answer(conn, match.name, reply, request, match.route)
                return
            if waiting.wants_html(request):
                self._start_wake(match, gate)
                page = waiting.loading(
                    pages=self.pages,
                    route=match.route,
                    host=request.host,
                    gate=gate,
                    heartbeat_s=self.heartbeat_s,
                )
                self._answer(conn, match.name, page, request, match.route)
                return
        exchange = Exchange(self, conn, request, match, gate, health=health)
        conn.handler = exchange
        exchange.start()

    def _answer(
        self,
        conn: ClientConnection,
        name: str,
        reply: Reply,
        request: ClientRequest,
        route: RouteConfig | None,
    ) -> None:
        self.metrics.request(name, reply.status, None)
        # Whole, at once: the request is over (conn.handler stays None).
        conn.reply(self.for_client(request, reply, route))

    def for_client(self, request: ClientRequest, reply: Reply, route: RouteConfig | None) -> Reply:
        """The one place a problem becomes an HTML page for a browser (waiting.for_client)."""
        if reply.problem is None:
            return reply
        return waiting.for_client(request, reply, pages=self.pages, route=route)

    def set_pages(self, pages: Pages) -> None:
        """A reload's theme and template: the next page served uses them."""
        self.pages = pages

    def upstream_for(self, route: RouteConfig) -> Upstream:
        return self.upstreams.get(route)

    def prefix_of(self, route: RouteConfig) -> str:
        prefix = self._prefixes.get(route.path_prefix)
        if prefix is None:
            prefix = self._prefixes[route.path_prefix] = upstream_prefix(route.path_prefix)
        return prefix

    # ------------------------------------------------------------------ waking

    def _start_wake(self, match: RouteMatch, gate: Gate) -> None:
        """Wake in the background while the browser shows the loading page."""
        index = match.name
        running = self._wakes.get(index)
        if self._closed or (running is not None and not running.done()):
            return
        task = self.spawn(self._wake(match, gate), f"pxproxy-wake-{match.name}")
        self._wakes[index] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._wakes.get(index) is done:
                del self._wakes[index]

        task.add_done_callback(forget)

    @staticmethod
    async def _wake(match: RouteMatch, gate: Gate) -> None:
        try:
            await gate.ready()
        except WakeError as exc:
            # The loading page shows it through the progress events.
            log.info("wake for %s failed: %s", match.name, exc)
        except Exception:
            log.exception("wake for %s failed unexpectedly", match.name)
