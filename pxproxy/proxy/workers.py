"""`proxy.workers`: the daemon's side of its proxy worker processes (proxy/worker.py).

The daemon starts N-1 workers, each accepting on the proxy's port beside the daemon
(SO_REUSEPORT: the kernel spreads new connections over the processes). Every SYNC_INTERVAL_S
it tells them what changed: the route set, the listener's address, the certificates, and per
route whether the guest is ready and at which address. Their reports come back the other way:
activity, connections held open (the daemon holds the guest's gate for them) and counters,
which /metrics adds to its own. A worker that dies is started again, with a growing delay;
what it held is let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config.models import ProxyConfig, RouteConfig
from ..routing.hosts import RouteTable
from ..shutdown import cancel_and_wait
from ..wake.contract import ALWAYS_READY, Gate, WakeState
from . import worker_messages as msg
from .stats import ProxyStats
from .upstream import UpstreamError, Upstreams

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.1
WRITE_TIMEOUT_S = 5.0  # a worker that reads nothing of its pipe for this long is killed
RESTART_DELAY_S = (1.0, 30.0)  # first delay, and the most it grows to
STABLE_S = 30.0  # a worker that ran this long restarts at the first delay again
# Past the grace, before a draining worker is killed: its own drain cuts what is left at the
# grace, so this is only its exit. Below daemon.DRAIN_EXTRA_S, which bounds this whole stop.
STOP_EXTRA_S = 0.5


@dataclass(frozen=True, slots=True)
class WorkerSource:
    """What the workers follow, read from the daemon on every sync."""

    table: Callable[[], RouteTable]  # the live route table (swapped whole)
    routes: Callable[[], Sequence[RouteConfig]]  # its routes, in the table's order
    gates: Callable[[RouteConfig], Gate]
    upstreams: Upstreams
    proxy: Callable[[], ProxyConfig]
    listen: Callable[[], tuple[str, int] | None]
    tls_generation: Callable[[], int]


@dataclass(slots=True)
class _Slot:
    number: int
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    stats: ProxyStats = field(default_factory=ProxyStats)
    # Per route name, the gates held for it: more than one after a reload sent the name to
    # another guest while connections to the first were open.
    holds: dict[str, list[tuple[Gate, AbstractContextManager[None]]]] = field(default_factory=dict)
    sent_config: bytes = b""
    sent_ready: bytes = b""
    port: int | None = None
    listening: bool = False  # it follows the last listener address it was sent
    error: str | None = None
    task: asyncio.Task[None] | None = None
    sending: asyncio.Task[None] | None = None  # the sync's last send, while it drains

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None


def readiness(
    routes: Sequence[RouteConfig], gates: Callable[[RouteConfig], Gate], upstreams: Upstreams
) -> msg.Readiness:
    """Per route: Direct when its guest is ready and has an address (a worker may serve
    it), else None (the worker relays it to the daemon, which wakes, waits or explains)."""
    out: list[msg.Direct | None] = []
    for route in routes:
        gate = gates(route)
        if route.host is None or gate.state is not WakeState.READY:
            out.append(None)
            continue
        try:
            upstream = upstreams.get(route)
        except UpstreamError:
            out.append(None)
            continue
        out.append(msg.Direct(upstream, gate is not ALWAYS_READY))
    return tuple(out)


class ProxyWorkers:
    def __init__(self, count: int, source: WorkerSource, *, log_format: str = "text") -> None:
        self.count = count  # workers besides the daemon
        self._source = source
        self._log_format = log_format
        self._slots = [_Slot(n) for n in range(1, count + 1)]
        self._relay: tuple[str, int] | None = None
        self._secret = ""
        self._config_line = b""
        self._ready_line = b""
        self._seen: tuple[Any, ...] | None = None
        self._names: tuple[RouteTable | None, dict[str, RouteConfig]] = (None, {})
        self._retired = ProxyStats()  # the counters of workers that are gone
        self._sync: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = asyncio.Event()  # ends a restart delay at once
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, relay: tuple[str, int], secret: str) -> None:
        self._relay, self._secret = relay, secret
        self._refresh()
        for slot in self._slots:
            slot.task = asyncio.create_task(self._run(slot), name=f"proxy-worker-{slot.number}")
        self._sync = asyncio.create_task(self._follow(), name="proxy-workers-sync")

    async def stop(self, grace_s: float) -> None:
        """Each worker stops accepting and finishes what it has, within the grace."""
        self._stopping = True
        self._stopped.set()
        await cancel_and_wait(self._sync)
        for slot in self._slots:
            await cancel_and_wait(slot.sending)
        line = msg.encode_drain(grace_s)
        for slot in self._slots:
            proc = slot.proc
            if proc is not None and proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    proc.stdin.write(line)
                    proc.stdin.close()

        async def ended(slot: _Slot) -> None:
            if slot.task is None:
                return
            try:
                await asyncio.wait_for(asyncio.shield(slot.task), grace_s + STOP_EXTRA_S)
            except TimeoutError:
                if slot.proc is not None and slot.proc.returncode is None:
                    log.warning("proxy worker %d did not stop: killed", slot.number)
                    slot.proc.kill()
                await cancel_and_wait(slot.task)
            except Exception:  # logged by _run; the daemon's stop must go on
                pass

        await asyncio.gather(*(ended(slot) for slot in self._slots))

    # ------------------------------------------------------------------ one worker

    async def _run(self, slot: _Slot) -> None:
        delay = RESTART_DELAY_S[0]
        while not self._stopping:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "pxproxy.proxy.worker",
                    str(slot.number),
                    self._log_format,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    # The worker's log lines go where the daemon's go.
                    stderr=None,
                    limit=64 * 1024 * 1024,
                )
            except OSError as exc:
                log.error("proxy worker %d could not be started: %s", slot.number, exc)
            else:
                if self._stopping:
                    # Spawned while the daemon began to stop: it missed the drain, and has
                    # no config yet, so nothing to finish.
                    proc.kill()
                    await proc.wait()
                    return
                slot.proc, slot.started = proc, time.monotonic()
                slot.sent_config = slot.sent_ready = b""
                log.info("proxy worker %d started (pid %d)", slot.number, proc.pid)
                try:
                    await self._send(slot)
                    await self._read(slot)
                except Exception:
                    # A bug of ours or a line past the reader's limit: this worker goes, and
                    # is started again like any that ended.
                    log.exception("proxy worker %d: supervision failed: killed", slot.number)
                finally:
                    self._let_go(slot)
                    if proc.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            proc.kill()
                    await proc.wait()
                if self._stopping:
                    log.info("proxy worker %d stopped", slot.number)
                    return
                log.error(
                    "proxy worker %d (pid %d) exited with status %s%s; starting it again in %gs",
                    slot.number,
                    proc.pid,
                    proc.returncode,
                    f" ({slot.error})" if slot.error else "",
                    delay,
                )
                if time.monotonic() - slot.started > STABLE_S:
                    delay = RESTART_DELAY_S[0]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), delay)
            if self._stopping:
                return
            delay = min(delay * 2, RESTART_DELAY_S[1])
            slot.restarts += 1
            self.restarts += 1

    async def _read(self, slot: _Slot) -> None:
        proc = slot.proc
        assert proc is not None
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError as exc:  # a line past the limit (LimitOverrunError)
                log.error("proxy worker %d sent a line too long (%s): killed", slot.number, exc)
                return
            if not line:
                return
            try:
                self._apply(slot, msg.decode(line))
            except msg.MessageError as exc:
                log.error(
                    "proxy worker %d sent what is not a message (%s): killed", slot.number, exc
                )
                return

    def _apply(self, slot: _Slot, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == "report":
            self._report(slot, msg.report_of(message))
        elif kind == "listening":
            slot.port, slot.listening, slot.error = message.get("port"), True, None
        elif kind == "failed":
            slot.error, slot.listening = str(message.get("error")), False
            log.error("proxy worker %d: %s", slot.number, slot.error)
        else:
            raise msg.MessageError(f"unknown message kind {kind!r}")

    def _report(self, slot: _Slot, report: msg.Report) -> None:
        slot.stats = report.stats
        names = self._route_names()
        gates = self._source.gates
        for name, count in report.activity.items():
            route = names.get(name)
            if count and route is not None:
                gates(route).activity()
        # A report names every hold open now: one it does not name has ended (the report
        # with its 0 may be one the worker skipped, its pipe full).
        for name in [n for n in slot.holds if report.holds.get(n, 0) <= 0]:
            for _, hold in slot.holds.pop(name):
                hold.__exit__(None, None, None)
        for name, open_now in report.holds.items():
            route = names.get(name)
            if open_now <= 0 or route is None:
                continue
            gate = gates(route)
            held = slot.holds.setdefault(name, [])
            if any(g is gate for g, _ in held):
                continue
            # The first, or the name leads to another guest now: that one is held too, until
            # the worker's connections of this name have all ended.
            hold = gate.hold()
            hold.__enter__()
            held.append((gate, hold))

    def _let_go(self, slot: _Slot) -> None:
        """A worker ended: what it held open is closed, its counters kept."""
        for held in slot.holds.values():
            for _, hold in held:
                hold.__exit__(None, None, None)
        slot.holds.clear()
        self._retired.add(slot.stats, connections=False)
        slot.stats = ProxyStats()
        slot.port, slot.listening = None, False

    def _route_names(self) -> dict[str, RouteConfig]:
        table = self._source.table()
        if self._names[0] is not table:
            self._names = (table, {m.name: m.route for m in table.routes})
        return self._names[1]

    # ------------------------------------------------------------------ following the daemon

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                self._refresh()
                for slot in self._slots:
                    # Each worker on its own: one whose pipe is full (a wedged process, until
                    # WRITE_TIMEOUT_S kills it) holds back no other's news. It gets the
                    # newest lines once its send is done.
                    if slot.sending is None or slot.sending.done():
                        slot.sending = asyncio.create_task(
                            self._send(slot), name=f"proxy-worker-{slot.number}-send"
                        )
            except Exception:  # one bad round must not end the following
                log.exception("proxy workers: sync failed")

    def _refresh(self) -> None:
        """The lines every worker should have been sent last, worked out anew."""
        source = self._source
        table = source.table()
        proxy, listen, generation = source.proxy(), source.listen(), source.tls_generation()
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        seen = (table, proxy, listen, generation, level)
        routes = source.routes()
        if self._seen is None or any(
            a is not b and a != b for a, b in zip(seen, self._seen, strict=True)
        ):
            assert self._relay is not None
            config = msg.WorkerConfig(
                proxy=proxy,
                routes=tuple(routes),
                listen=listen,
                relay=self._relay,
                secret=self._secret,
                tls_generation=generation,
                log_level=level,
            )
            self._config_line = msg.encode_config(config)
            self._seen = seen
        self._ready_line = msg.encode_ready(readiness(routes, source.gates, source.upstreams))

    async def _send(self, slot: _Slot) -> None:
        proc = slot.proc
        if proc is None or proc.returncode is not None or proc.stdin is None:
            return
        data = b""
        if slot.sent_config != self._config_line:
            data += self._config_line
            slot.sent_ready = b""  # a new route set: its readiness follows
        if slot.sent_ready != self._ready_line:
            data += self._ready_line
        if not data:
            return
        try:
            proc.stdin.write(data)
            await asyncio.wait_for(proc.stdin.drain(), WRITE_TIMEOUT_S)
        except (OSError, RuntimeError):
            return  # it is exiting: its reader sees the end
        except TimeoutError:
            log.error("proxy worker %d reads nothing of its pipe: killed", slot.number)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return
        slot.sent_config, slot.sent_ready = self._config_line, self._ready_line

    # ------------------------------------------------------------------ for /metrics and /health

    def stats(self) -> list[ProxyStats]:
        return [self._retired, *(slot.stats for slot in self._slots)]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "worker": slot.number,
                "pid": slot.pid,
                "running": slot.pid is not None,
                "listening": slot.listening,
                "port": slot.port,
                "restarts": slot.restarts,
                **({"error": slot.error} if slot.error else {}),
            }
            for slot in self._slots
        ]

    def pids(self) -> Iterator[int]:
        return (pid for slot in self._slots if (pid := slot.pid) is not None)


class WorkersCollector(Collector):
    """pxproxy_proxy_workers (running) and pxproxy_proxy_worker_restarts."""

    def __init__(self, workers: ProxyWorkers) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "pxproxy_proxy_workers", "Proxy worker processes running besides the daemon"
        )
        running.add_metric([], sum(1 for _ in self._workers.pids()))
        restarts = CounterMetricFamily(
            "pxproxy_proxy_worker_restarts", "Proxy workers started again after they ended"
        )
        restarts.add_metric([], self._workers.restarts)
        yield running
        yield restarts


def secret() -> str:
    """The relay listener's secret: only the workers, told over their pipes, know it."""
    return os.urandom(24).hex()
