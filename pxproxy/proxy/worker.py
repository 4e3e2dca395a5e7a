"""A proxy worker: one more process accepting on the daemon's proxy port (SO_REUSEPORT), for
`proxy.workers` above 1. Started by the daemon (proxy/workers.py) as
`python -m pxproxy.proxy.worker N LOG_FORMAT`, and told everything else over its stdin
(proxy/worker_messages.py).

It forwards only what needs no decision: requests to routes the daemon said are ready, to the
upstream the daemon said. Everything else (a guest not ready, pxproxy's own /.pxproxy/ paths)
goes to the daemon's relay listener (proxy/relay.py), so wakes, loading pages and held
requests stay in one process. Activity and open connections of idle-watched routes, and the
counters, go back to the daemon in a report every REPORT_INTERVAL_S; the first activity after
a quiet interval goes at once, so the daemon does not stop a guest a worker has just begun
to use. The worker exits when its stdin closes (the daemon is gone) or the daemon says drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ..config.models import ProxyConfig, RouteConfig
from ..wake.contract import ALWAYS_READY, AlwaysReady, Gate, WakeProgress, WakeState
from . import worker_messages as msg
from .http import HttpProxy, RelayTarget
from .listener import ProxyListener
from .pool import KEEPALIVE_S, UpstreamPool
from .routes import RouteTable
from .stats import ProxyStats
from .tls import ServerCertificates, TlsError
from .upstream import NoAddress, Upstream

log = logging.getLogger("pxproxy.proxy.worker")

REPORT_INTERVAL_S = 0.5
# Reports wait while this much is unread by the daemon: counters are cumulative, activity is
# only ever "some", and each report names every hold still open, so a skipped one loses
# nothing that matters.
MAX_UNSENT = 1 << 20
# The worker's bound on the daemon's silence over the relay: the daemon's own timeouts (wake,
# guest) come first; this only ends a relay to a daemon that hangs.
RELAY_READ_TIMEOUT_S = 24 * 3600.0


class Reporter:
    """Collects what the daemon's idle-watch must know, and sends it."""

    def __init__(self, stats: ProxyStats, send: Any) -> None:
        self.stats = stats
        self._send = send  # bytes -> None
        self.activity: dict[str, int] = {}
        self.holds: dict[str, int] = {}
        self._busy: set[str] = set()  # routes the last report told of
        self._soon: asyncio.Handle | None = None

    def touched(self, name: str) -> None:
        """First news of a route since the last report: if the daemon thinks it quiet,
        tell it now, not at the next tick."""
        if name not in self._busy and self._soon is None:
            self._soon = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._soon = None
        busy = {n for n, c in self.activity.items() if c} | {n for n, c in self.holds.items() if c}
        report = msg.Report(dict(self.activity), dict(self.holds), self.stats)
        self._busy = busy
        self._send(msg.encode_report(report))
        self.activity.clear()
        # Holds stay until they end; ended ones are reported once as 0. In place: a hold's
        # exit finds its count in this same dict.
        for name in [n for n, c in self.holds.items() if not c]:
            del self.holds[name]


class WorkerGate:
    """The gate of a ready, idle-watched route in a worker: it counts, the daemon decides."""

    __slots__ = ("_name", "_reporter")

    state = WakeState.READY
    wake_timeout_s = 0.0

    def __init__(self, name: str, reporter: Reporter) -> None:
        self._name = name
        self._reporter = reporter

    async def ready(self, *, wake: bool = True) -> None:
        return None

    def activity(self) -> None:
        activity = self._reporter.activity
        count = activity.get(self._name, 0)
        activity[self._name] = count + 1
        if not count:
            self._reporter.touched(self._name)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        holds = self._reporter.holds
        holds[self._name] = holds.get(self._name, 0) + 1
        self._reporter.touched(self._name)
        try:
            yield
        finally:
            # Still in the dict: a flush drops only counts at 0, and this one is above.
            holds[self._name] -= 1
            self.activity()

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(WakeState.READY, "ready")


class RelayGate(AlwaysReady):
    """The gate of a route whose guest is not ready: the proxy relays its requests (nothing
    to count here: the daemon counts them)."""

    state = WakeState.ASLEEP

    async def ready(self, *, wake: bool = True) -> None:
        raise AssertionError("a worker never waits for a guest")

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(WakeState.ASLEEP, "relayed")


RELAYED = RelayGate()


class Routing:
    """The daemon's last word: the route table, and per route Direct or relay."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.table = RouteTable(())
        self._index: dict[int, int] = {}  # id(route config) -> position
        self._gates: tuple[Gate, ...] = ()
        self._upstreams: tuple[Upstream | None, ...] = ()
        self.routes: tuple[RouteConfig, ...] = ()

    def configure(self, routes: tuple[RouteConfig, ...]) -> None:
        """A new route set: everything relays until the daemon says what is ready."""
        self.routes = routes
        self.table = RouteTable(routes)
        self._index = {id(r): i for i, r in enumerate(routes)}
        self._gates = (RELAYED,) * len(routes)
        self._upstreams = (None,) * len(routes)

    def set_ready(self, ready: msg.Readiness) -> None:
        names = {m.route_index: m.name for m in self.table.routes}
        gates: list[Gate] = []
        for i, direct in enumerate(ready):
            if direct is None:
                gates.append(RELAYED)
            elif direct.watched and i in names:
                gates.append(WorkerGate(names[i], self._reporter))
            else:
                gates.append(ALWAYS_READY)
        self._gates = tuple(gates)
        self._upstreams = tuple(None if d is None else d.upstream for d in ready)

    def gate(self, route: RouteConfig) -> Gate:
        index = self._index.get(id(route))
        return RELAYED if index is None else self._gates[index]

    def get(self, route: RouteConfig) -> Upstream:
        index = self._index.get(id(route))
        upstream = None if index is None else self._upstreams[index]
        if upstream is None:
            # Not reached: such a route's gate relays. Kept typed for the proxy's contract.
            raise NoAddress(route.guest, f"guest {route.guest!r} is not ready")
        return upstream


class Worker:
    def __init__(self, number: int, out: asyncio.WriteTransport) -> None:
        self.number = number
        self._out = out
        self.stats = ProxyStats()
        self.reporter = Reporter(self.stats, self._send)
        self.routing = Routing(self.reporter)
        self.proxy: HttpProxy | None = None
        self._listener: ProxyListener | None = None
        self._listen: tuple[str, int] | None = None
        self._certificates: ServerCertificates | None = None
        self._tls_generation = -1
        self._tls_failed = -1  # the generation whose reload failed here, logged once
        self._config: msg.WorkerConfig | None = None
        self._ticker: asyncio.Task[None] | None = None

    def _send(self, line: bytes, *, always: bool = False) -> None:
        """A line to the daemon; reports wait while the daemon is behind (`always`: the rare
        ones /health shows, which must not be lost)."""
        if self._out.is_closing():
            return
        if not always and self._out.get_write_buffer_size() > MAX_UNSENT:
            return
        self._out.write(line)

    async def handle(self, message: dict[str, Any]) -> bool:
        """Apply one message; False once the worker should stop."""
        kind = message["kind"]
        if kind == "config":
            await self._configure(msg.config_of(message))
        elif kind == "ready":
            self.routing.set_ready(msg.ready_of(message, len(self.routing.routes)))
        elif kind == "drain":
            await self.stop(float(message.get("grace", 0)))
            return False
        else:
            raise msg.MessageError(f"unknown message kind {kind!r}")
        return True

    async def _configure(self, config: msg.WorkerConfig) -> None:
        first = self._config is None
        self._config = config
        logging.getLogger().setLevel(config.log_level.upper())
        if config.routes != self.routing.routes:
            self.routing.configure(config.routes)
        if first:
            self.proxy = self._make_proxy(config.proxy)
            relay = Upstream("pxproxy", "daemon", config.relay[0], config.relay[1], "http")
            self.proxy.relay = RelayTarget(relay, config.secret)
            # The daemon says nothing while it wakes a guest (up to the route's
            # wake_timeout) and bounds that wait and the guest's silence itself.
            self.proxy.relay_pool = UpstreamPool(
                connect_timeout=config.proxy.connect_timeout,
                read_timeout=RELAY_READ_TIMEOUT_S,
                # Given up before the daemon's side closes it as idle: a request sent on a
                # connection it is closing would be lost (a POST is not sent again).
                keepalive_s=min(KEEPALIVE_S, config.proxy.keepalive_timeout / 2),
            )
            self._ticker = self.proxy.spawn(self._tick(), "pxproxy-worker-report")
        elif self.proxy is not None:
            self.proxy.set_pages(config.proxy.pages.pages())  # a reload's theme or template
        await self._load_certificates(config)
        if config.listen != self._listen:
            listener = await self._open(config.listen)
            if self._listener is not None:
                self._listener.close()  # its connections finish on their own
            self._listener, self._listen = listener, config.listen

    def _make_proxy(self, proxy: ProxyConfig) -> HttpProxy:
        return HttpProxy(
            lambda: self.routing.table,
            self.routing,
            self.routing.gate,
            proxy,
            self.stats,
        )

    async def _load_certificates(self, config: msg.WorkerConfig) -> None:
        tls = config.proxy.tls
        if tls is None or config.tls_generation == self._tls_generation:
            return
        try:
            loaded = await asyncio.to_thread(ServerCertificates.prepare, tls)
        except TlsError as exc:
            if self._certificates is None:
                # None to serve with: the port must not be served without TLS. The daemon
                # starts this worker again (with its delay) and shows why in /health.
                self._send(msg.encode_listening(None, f"proxy.tls: {exc}"), always=True)
                raise
            # The daemon loaded these; a file changed again between its read and ours. The
            # next report tick tries again (logged once per reload).
            if self._tls_failed != config.tls_generation:
                self._tls_failed = config.tls_generation
                log.error("certificate reload failed; the running ones stay: %s", exc)
            return
        self._tls_generation = config.tls_generation
        if self._certificates is None:
            self._certificates = ServerCertificates(loaded)
        else:
            self._certificates.swap(loaded)

    async def _open(self, listen: tuple[str, int] | None) -> ProxyListener | None:
        if listen is None:
            self._send(msg.encode_listening(None), always=True)
            return None
        assert self.proxy is not None
        tls = self._certificates.context if self._certificates else None
        try:
            listener = await self.proxy.listen(listen[0], listen[1], tls=tls, reuse_port=True)
        except OSError as exc:
            self._send(msg.encode_listening(None, f"cannot listen on {listen}: {exc}"), always=True)
            raise
        self._send(msg.encode_listening(listener.port), always=True)
        return listener

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            self.reporter.flush()
            config = self._config
            if config is not None and config.tls_generation != self._tls_generation:
                await self._load_certificates(config)  # a reload that failed here

    async def stop(self, grace_s: float) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.proxy is not None:
            await self.proxy.drain(grace_s)
            await self.proxy.close()  # the ticker too
        self.reporter.flush()  # the last counters, and holds at 0


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _stdout() -> asyncio.WriteTransport:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
    return transport


async def serve(number: int) -> int:
    loop = asyncio.get_running_loop()
    # The daemon decides when to stop and says so (a drain with its grace, or the end of
    # the pipe). A terminal's Ctrl-C reaches every process of the group, and so does
    # systemd's SIGTERM (KillMode=control-group): acting on it would cut this worker's
    # requests while the daemon drains its own. SIGHUP is the daemon's to act on.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: None)
    reader = await _stdin()
    out = await _stdout()
    worker = Worker(number, out)
    while True:
        line = await reader.readline()
        if not line:
            log.info("the daemon is gone: stopping")
            break
        if not await worker.handle(msg.decode(line)):
            return 0
    await worker.stop(0)
    return 0


def main(argv: list[str]) -> int:
    from ..log_format import LogFormat
    from ..runtime import run, setup_logging

    number = int(argv[0])
    fmt: LogFormat = "json" if argv[1] == "json" else "text"
    setup_logging("info", fmt, prefix=f"worker {number}: ")
    try:
        return run(serve(number))
    except (msg.MessageError, OSError, TlsError) as exc:
        log.error("proxy worker %d stopped: %s", number, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
