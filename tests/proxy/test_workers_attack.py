"""Attack review of `proxy.workers`: a real Worker (proxy/worker.py, in this process, its
stdout a recorder) in front of a daemon-side HttpProxy with its relay listener, and the
daemon's ProxyWorkers supervisor with stand-in worker programs. Each test shows one defect.
vmids 7291-7299 are this file's."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web

from pxproxy.config.listener_tls import ProxyTlsConfig
from pxproxy.config.models import ProxyConfig, RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.proxy import worker_messages as msg
from pxproxy.proxy import workers as workers_module
from pxproxy.proxy.http import HttpProxy
from pxproxy.proxy.relay import RelayCheck
from pxproxy.proxy.routes import RouteTable
from pxproxy.proxy.upstream import SnapshotUpstreams, Upstream
from pxproxy.proxy.worker import MAX_UNSENT, Worker, WorkerGate
from pxproxy.proxy.workers import ProxyWorkers, WorkerSource, readiness
from pxproxy.wake.contract import ALWAYS_READY, Gate, WakeError, WakeState

from ..certificates import TestCa
from ..support import wait_for
from .conftest import HOST, RecordingMetrics, publish, routes, snapshot_guest
from .counting_gate import CountingGate
from .raw_client import exchange
from .raw_upstream import RawUpstream, recording_upstream

WIKI_VMID, OTHER_VMID = 7291, 7292
SECRET = "f" * 48  # as long as workers.secret() makes


class SleepyGate(CountingGate):
    """A daemon gate whose guest is asleep until a request waits for it; the wake then
    succeeds at once."""

    def __init__(self) -> None:
        super().__init__(WakeState.ASLEEP)
        self.wakes = 0

    async def ready(self, *, wake: bool = True) -> None:
        if wake:
            self.wakes += 1
            self.state = WakeState.READY


class Out:
    """A worker's stdout: the lines it sent, decoded."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        self.lines.append(msg.decode(data))


def reserved_port() -> socket.socket:
    """A port for the worker to bind beside (SO_REUSEPORT), bound here but not listening: it
    takes no connections."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((HOST, 0))
    return sock


@dataclass
class Pair:
    daemon: HttpProxy
    relay_port: int
    public_port: int  # the daemon's own proxy listener (not shared: the worker has its own)
    worker: Worker
    out: Out
    port: int  # the worker's
    gates: dict[str, Gate]
    wiki: RawUpstream
    route_configs: tuple[RouteConfig, ...]
    upstreams: SnapshotUpstreams
    metrics: RecordingMetrics = field(default_factory=RecordingMetrics)

    async def sync(self) -> None:
        """What the daemon's supervisor sends after a change: readiness, as it is now."""
        line = msg.encode_ready(readiness(self.route_configs, self.gates_of, self.upstreams))
        await self.worker.handle(msg.decode(line))

    def gates_of(self, route: RouteConfig) -> Gate:
        return self.gates.get(route.guest, ALWAYS_READY)


@pytest.fixture
async def wiki() -> AsyncIterator[RawUpstream]:
    async with recording_upstream() as up:
        yield up


@contextlib.asynccontextmanager
async def pair(
    wiki: RawUpstream,
    gates: dict[str, Gate],
    *,
    tls: ProxyTlsConfig | None = None,
    **proxy_config: Any,
) -> AsyncIterator[Pair]:
    route_configs = routes({"host": "wiki.test", "guest": "wiki", "port": wiki.port, "idle": {}})
    config = ProxyConfig.model_validate({**proxy_config, "tls": tls})
    inventory = Inventory()
    publish(inventory, [snapshot_guest(WIKI_VMID, "wiki", (HOST,))])
    upstreams = SnapshotUpstreams(inventory)
    metrics = RecordingMetrics()
    daemon = HttpProxy(
        RouteTable(route_configs),
        upstreams,
        lambda route: gates.get(route.guest, ALWAYS_READY),
        ProxyConfig.model_validate(proxy_config),  # the daemon's side of the test is plain
        metrics,
    )
    stack = contextlib.AsyncExitStack()
    async with stack:
        stack.push_async_callback(daemon.close)
        relay = await daemon.listen(HOST, 0, relay=RelayCheck(SECRET))
        stack.callback(relay.close)
        public = await daemon.listen(HOST, 0)
        stack.callback(public.close)
        reserved = stack.enter_context(reserved_port())
        port = reserved.getsockname()[1]
        out = Out()
        worker = Worker(1, cast(asyncio.WriteTransport, out))
        stack.push_async_callback(worker.stop, 0)
        assert relay.port is not None
        assert public.port is not None
        first = msg.WorkerConfig(
            proxy=config,
            routes=route_configs,
            listen=(HOST, port),
            relay=(HOST, relay.port),
            secret=SECRET,
        )
        with contextlib.suppress(Exception):  # a worker that fails here exits: see the tests
            await worker.handle(msg.decode(msg.encode_config(first)))
        p = Pair(
            daemon,
            relay.port,
            public.port,
            worker,
            out,
            port,
            gates,
            wiki,
            route_configs,
            upstreams,
            metrics,
        )
        with contextlib.suppress(Exception):
            await p.sync()
        yield p


def get(host: str = "wiki.test", *fields: str, target: str = "/") -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ---------------------------------------------------------------------- 1. the relay's limits


async def test_a_request_with_as_many_fields_as_allowed_is_served_when_relayed(
    wiki: RawUpstream,
) -> None:
    """Client heads the public listener accepts must not be refused by the relay listener
    for the three fields the worker adds."""
    gate = SleepyGate()
    async with pair(wiki, {"wiki": gate}) as p:
        fill = [f"X-Fill-{i}: {i}" for i in range(99)]  # with Host: max_headers (100)
        request = get("wiki.test", *fill)
        # The daemon itself serves it: wakes, holds, forwards.
        direct = await exchange(p.public_port, request)
        assert direct.status == 200, direct.body
        gate.state = WakeState.ASLEEP
        await p.sync()
        relayed = await exchange(p.port, request)
        assert relayed.status == 200, (relayed.status, relayed.body)


async def test_a_head_just_under_the_size_limit_is_served_when_relayed(wiki: RawUpstream) -> None:
    gate = SleepyGate()
    async with pair(wiki, {"wiki": gate}, max_header_size=1024) as p:
        # 16 + len("/") + Host (4 + 9 + 4) + X-Big (5 + 970 + 4) = 1013 of 1024.
        request = get("wiki.test", "X-Big: " + "b" * 970)
        direct = await exchange(p.public_port, request)
        assert direct.status == 200, direct.body
        gate.state = WakeState.ASLEEP
        await p.sync()
        relayed = await exchange(p.port, request)
        assert relayed.status == 200, (relayed.status, relayed.body)


class SlowWakeGate(SleepyGate):
    """A guest that takes a while to boot: longer than the proxy's read_timeout, within the
    route's wake_timeout."""

    async def ready(self, *, wake: bool = True) -> None:
        self.wakes += 1
        await asyncio.sleep(1.0)  # the boot
        self.state = WakeState.READY


async def test_a_held_request_through_a_worker_waits_for_the_wake_not_the_read_timeout(
    wiki: RawUpstream,
) -> None:
    """read_timeout is the guest's silence allowed once asked; a held request waits up to
    wake_timeout first. The worker applies read_timeout to the daemon, which says nothing
    while it wakes the guest: the client gets the worker's 502 instead of the page."""
    gate = SlowWakeGate()
    async with pair(wiki, {"wiki": gate}, read_timeout=0.3) as p:
        direct = await exchange(p.public_port, get())
        assert direct.status == 200, direct.body
        gate.state = WakeState.ASLEEP
        await p.sync()
        relayed = await exchange(p.port, get())
        assert relayed.status == 200, (relayed.status, relayed.body)


# ---------------------------------------------------------------------- 2. TLS


async def test_a_worker_that_cannot_load_the_certificates_never_serves_plain_http(
    wiki: RawUpstream, tmp_path: Path
) -> None:
    """A restarted worker reads the certificate files itself; if they are broken on disk
    (a renewal half-written), it must not open the HTTPS port without TLS."""
    leaf = TestCa().issue("wiki.test")
    files = leaf.write(tmp_path, "wiki")
    await asyncio.to_thread(Path(files.cert).write_text, "not a certificate\n")
    tls = ProxyTlsConfig(certificates=(files,))
    async with pair(wiki, {}, tls=tls) as p:
        reply = None
        with contextlib.suppress(OSError, AssertionError):
            reply = await exchange(p.port, get(), timeout_s=2)
        assert reply is None, f"plain HTTP answered on the TLS port: {reply}"
        assert not [m for m in p.out.lines if m["kind"] == "listening"], p.out.lines


async def _serial_served(port: int, ca: TestCa) -> int:
    import ssl

    from cryptography import x509

    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=ca.client_context(), server_hostname="wiki.test"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()
        del reader


async def test_a_worker_whose_certificate_reload_failed_tries_again(
    wiki: RawUpstream, tmp_path: Path
) -> None:
    """The daemon reloaded the files; a worker that read them mid-write keeps its running
    certificates, and loads the new ones at its next report tick, not at the next reload."""
    ca = TestCa()
    first = ca.issue("wiki.test")
    files = first.write(tmp_path, "wiki")
    tls = ProxyTlsConfig(certificates=(files,))
    async with pair(wiki, {}, tls=tls) as p:
        assert await _serial_served(p.port, ca) == first.serial
        await asyncio.to_thread(Path(files.cert).write_text, "half a renewal\n")
        assert p.worker._config is not None
        renewal = dataclasses.replace(p.worker._config, tls_generation=1)
        await p.worker.handle(msg.decode(msg.encode_config(renewal)))
        assert await _serial_served(p.port, ca) == first.serial  # the running ones stay
        renewed = ca.issue("wiki.test")
        renewed.write(tmp_path, "wiki")
        await wait_for(
            lambda: p.worker._tls_generation == 1, 10, "the worker's next try at the renewal"
        )
        assert await _serial_served(p.port, ca) == renewed.serial


# ---------------------------------------------------------------------- 3. counters


async def test_a_worker_counts_its_502_when_the_daemon_cannot_be_reached(
    wiki: RawUpstream,
) -> None:
    """/metrics adds the workers' counters: a relayed request the worker answered itself
    (the daemon never saw it) must be in them, or the 502s vanish."""
    async with pair(wiki, {"wiki": SleepyGate()}) as p:
        dead = socket.socket()
        dead.bind((HOST, 0))
        dead_port = dead.getsockname()[1]
        dead.close()  # nothing listens there
        assert p.worker.proxy is not None
        assert p.worker.proxy.relay is not None
        relay = p.worker.proxy.relay
        p.worker.proxy.relay = relay._replace(
            upstream=Upstream("pxproxy", "daemon", HOST, dead_port, "http")
        )
        reply = await exchange(p.port, get())
        assert reply.status == 502
        counted = {n: dict(s.by_status) for n, s in p.worker.stats.routes.items()}
        assert counted.get("wiki.test", {}).get(502) == 1, counted


# ---------------------------------------------------------------------- 4. the supervisor


class Daemonish:
    """The daemon's side ProxyWorkers reads, with gates per guest that count holds."""

    def __init__(self, route_configs: tuple[RouteConfig, ...]) -> None:
        self.route_configs = route_configs
        self.table = RouteTable(route_configs)
        self.gates: dict[str, SleepyGate] = {}

    def gate(self, route: RouteConfig) -> Gate:
        return self.gates.setdefault(route.guest, SleepyGate())

    def swap(self, route_configs: tuple[RouteConfig, ...]) -> None:
        self.route_configs = route_configs
        self.table = RouteTable(route_configs)

    def get(self, route: RouteConfig) -> Upstream:
        return Upstream("lab:7294", route.guest, HOST, 80, "http")

    def workers(self, count: int = 1) -> ProxyWorkers:
        source = WorkerSource(
            table=lambda: self.table,
            routes=lambda: self.route_configs,
            gates=self.gate,
            upstreams=self,
            proxy=ProxyConfig,
            listen=lambda: None,
            tls_generation=lambda: 0,
        )
        return ProxyWorkers(count, source)


def report(holds: dict[str, int]) -> msg.Report:
    line = msg.encode_report(msg.Report({}, holds))
    return msg.report_of(msg.decode(line))


def test_a_hold_follows_the_guest_when_a_reload_moves_a_route() -> None:
    """A reload points app.test from guest a to guest b while a worker has a WebSocket open
    to a. The worker then opens one to b: its report says app.test: 2. Guest b must be held,
    or idle-watch stops it under an open connection."""
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80, "idle": {}}))
    workers = d.workers()
    slot = workers._slots[0]
    workers._report(slot, report({"app.test": 1}))
    assert d.gates["a"].entered == 1
    d.swap(routes({"host": "app.test", "guest": "b", "port": 80, "idle": {}}))
    workers._report(slot, report({"app.test": 2}))
    held_b = d.gate(d.route_configs[0])
    assert isinstance(held_b, SleepyGate)
    assert held_b.entered - held_b.exited == 1, "guest b is not held while its connection is open"


def fake_program(
    monkeypatch: pytest.MonkeyPatch, code: str | dict[int, str], *, limit: int | None = None
) -> None:
    """ProxyWorkers starts `code` (per worker number, if a dict) instead of the worker."""
    real = asyncio.create_subprocess_exec

    async def start(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        if limit is not None:
            kwargs["limit"] = limit
        chosen = code if isinstance(code, str) else code[int(args[3])]
        return await real(sys.executable, "-c", chosen, **kwargs)

    # The asyncio module ProxyWorkers calls: its process start, for this test only.
    monkeypatch.setattr(asyncio, "create_subprocess_exec", start)


async def test_a_worker_whose_line_overflows_the_reader_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A line longer than the pipe reader's limit (a runaway report, a stray write to stdout)
    raises ValueError in readline: the slot must be restarted, not abandoned."""
    fake_program(
        monkeypatch,
        "import sys, time; sys.stdout.write('x' * 4096); sys.stdout.flush(); time.sleep(60)",
        limit=1024,
    )
    monkeypatch.setattr(workers_module, "RESTART_DELAY_S", (0.05, 0.05))
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80}))
    workers = d.workers()
    await workers.start((HOST, 9), SECRET)
    try:
        await wait_for(lambda: workers.restarts >= 1, 5, "the worker started again")
    finally:
        await workers.stop(0)


async def test_stop_does_not_wait_out_a_restart_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that keeps failing (a port it cannot bind) sits in its restart delay; the
    daemon's stop must not wait for it (the daemon gives the workers only grace + 1 s)."""
    fake_program(monkeypatch, "import sys; sys.exit(1)")
    monkeypatch.setattr(workers_module, "RESTART_DELAY_S", (30.0, 30.0))
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80}))
    workers = d.workers()
    await workers.start((HOST, 9), SECRET)
    slot = workers._slots[0]
    await wait_for(
        lambda: slot.proc is not None and slot.proc.returncode is not None, 5, "the exit"
    )
    await asyncio.sleep(0)  # into the restart delay
    started = time.monotonic()
    await workers.stop(0)
    took = time.monotonic() - started
    assert took < 1.0, f"stop took {took:.1f}s"


async def test_stop_after_a_slot_failed_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever ended a slot's supervision, the daemon's stop must go on to close the relay
    listener, the proxy, the state and the sessions: workers.stop() must not raise."""
    fake_program(
        monkeypatch,
        "import sys, time; sys.stdout.write('x' * 4096); sys.stdout.flush(); time.sleep(60)",
        limit=1024,
    )
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80}))
    workers = d.workers()
    await workers.start((HOST, 9), SECRET)
    task = workers._slots[0].task
    assert task is not None
    await wait_for(lambda: task.done() or workers.restarts > 0, 5, "the slot's task to end")
    await workers.stop(0)  # raises the slot's ValueError today


# ---------------------------------------------------------------------- 5. Expect: 100-continue


class FailingGate(SleepyGate):
    async def ready(self, *, wake: bool = True) -> None:
        self.wakes += 1
        raise WakeError("wiki", "the start failed", 30)


async def read_some(port: int, data: bytes, until: bytes) -> bytes:
    """What the proxy sends on one connection until `until` is in it (or it closes)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(5):
            while until not in got:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return got


EXPECTING = (
    b"POST / HTTP/1.1\r\nHost: wiki.test\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
)


async def test_a_relayed_expect_is_not_answered_before_the_daemon_decides(
    wiki: RawUpstream,
) -> None:
    """The point of Expect: hear "no" before sending the body. The daemon refuses (the wake
    failed) without a 100; through a worker the client is told to go on first."""
    async with pair(wiki, {"wiki": FailingGate()}) as p:
        direct = await read_some(p.public_port, EXPECTING, b"\r\n\r\n{")
        assert direct.startswith(b"HTTP/1.1 503 "), direct
        relayed = await read_some(p.port, EXPECTING, b"\r\n\r\n{")
        assert relayed.startswith(b"HTTP/1.1 503 "), relayed


async def post_expecting(port: int) -> bytes:
    """The Expect dance: the head, the body once told to go on, then the final response."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(EXPECTING)
        async with asyncio.timeout(5):
            interim = await reader.readuntil(b"\r\n\r\n")
            assert b" 100 " in interim, interim
            writer.write(b"abc")
            final = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return final


async def test_the_guest_sees_expect_whether_or_not_a_worker_relayed(wiki: RawUpstream) -> None:
    gate = SleepyGate()
    async with pair(wiki, {"wiki": gate}) as p:
        assert (await post_expecting(p.public_port)).startswith(b"HTTP/1.1 200 ")
        gate.state = WakeState.ASLEEP
        await p.sync()
        assert (await post_expecting(p.port)).startswith(b"HTTP/1.1 200 ")
        heads = [r.values("Expect") for r in wiki.requests()]
        assert heads == [["100-continue"], ["100-continue"]], heads


# ---------------------------------------------------------------------- 6. SIGTERM


async def test_a_worker_finishes_its_requests_on_sigterm(upstream_app: Any) -> None:
    """systemd's default KillMode=control-group sends SIGTERM to the daemon and every worker
    at once. The daemon drains for shutdown_grace; a worker must not cut its requests."""
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(0.5)  # a slow page: the response comes after the SIGTERM
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/", slow)
    guest_port = await upstream_app(app)
    route_configs = routes({"host": "wiki.test", "guest": "wiki", "port": guest_port})
    with reserved_port() as reserved:
        port = reserved.getsockname()[1]
        config = msg.WorkerConfig(
            proxy=ProxyConfig(),
            routes=route_configs,
            listen=(HOST, port),
            relay=(HOST, 9),
            secret=SECRET,
        )
        ready = (msg.Direct(Upstream("lab:7293", "wiki", HOST, guest_port, "http"), False),)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pxproxy.proxy.worker", "1", "text",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(msg.encode_config(config) + msg.encode_ready(ready))
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert msg.decode(line)["kind"] == "listening", line
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(get())
            await asyncio.wait_for(arrived.wait(), 5)
            proc.send_signal(signal.SIGTERM)
            got = b""
            async with asyncio.timeout(5):
                while b"done" not in got:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    got += chunk
            writer.close()
            assert got.startswith(b"HTTP/1.1 200 "), got
            assert got.endswith(b"done"), got
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


# ---------------------------------------------------------------------- 7. one stuck worker


async def test_one_worker_that_reads_nothing_does_not_hold_back_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The sync sends to all workers and waits for the slowest: one whose pipe is full (a
    stopped or wedged process) holds every other worker's news for WRITE_TIMEOUT_S, so they
    go on forwarding to a guest that is being stopped, far past the README's 0.1 s."""
    seen = tmp_path / "seen"
    recorder = (
        "import sys\n"
        f"out = open({str(seen)!r}, 'a', buffering=1)\n"
        "for line in sys.stdin:\n"
        "    out.write(line)\n"
    )
    fake_program(monkeypatch, {1: "import time; time.sleep(60)", 2: recorder})
    # Enough routes that one config line is more than the pipe and the write buffer hold.
    many = routes(
        *({"host": f"r{i}.test", "guest": f"g{i}", "port": 80, "idle": {}} for i in range(4000))
    )
    d = Daemonish(many)
    workers = d.workers(2)
    await workers.start((HOST, 9), SECRET)

    def ready_lines() -> list[dict[str, Any]]:
        if not seen.exists():
            return []
        lines = [msg.decode(x) for x in seen.read_bytes().splitlines(keepends=True)]
        return [m for m in lines if m["kind"] == "ready"]

    try:
        await wait_for(lambda: bool(ready_lines()), 5, "worker 2's first readiness")
        for i in (0, 1):
            # The first change goes out in the sync round that then waits on worker 1; the
            # second one is the news held back.
            gate = d.gate(many[i])
            assert isinstance(gate, SleepyGate)
            gate.state = WakeState.READY
            await wait_for(
                lambda: any(m["routes"][i] is not None for m in ready_lines()),  # noqa: B023
                1.5,
                f"worker 2 told that r{i}.test is ready",
            )
    finally:
        await workers.stop(0)


async def test_a_worker_that_ignores_drain_is_killed_within_the_daemons_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Daemon.stop gives the drains grace + DRAIN_EXTRA_S, then moves on (and closes the
    relay listener the worker still relays to). ProxyWorkers kills a stuck worker only at
    grace + STOP_EXTRA_S: by then the daemon has given up on it, and it runs on."""
    from pxproxy import daemon as daemon_module

    fake_program(monkeypatch, "import time; time.sleep(60)")  # never reads its drain
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80}))
    workers = d.workers()
    await workers.start((HOST, 9), SECRET)
    slot = workers._slots[0]
    await wait_for(lambda: slot.pid is not None, 5, "the worker running")
    proc = slot.proc
    assert proc is not None
    grace = 0.0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace + daemon_module.DRAIN_EXTRA_S):  # as Daemon.stop
            await workers.stop(grace)
    try:
        assert proc.returncode is not None, "the worker outlived the daemon's stop"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if slot.task is not None:
            slot.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slot.task


class FullOut(Out):
    """A worker's stdout that the daemon has stopped reading for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def get_write_buffer_size(self) -> int:
        return MAX_UNSENT + 1 if self.full else 0


async def test_a_hold_that_ended_while_reports_were_skipped_is_let_go() -> None:
    """Reports are skipped while the daemon reads nothing (MAX_UNSENT), 'losing nothing that
    matters'; but an ended hold is reported once, as 0. If that one is skipped, the daemon
    holds the guest awake until the worker exits."""
    route_configs = routes({"host": "app.test", "guest": "a", "port": 80, "idle": {}})
    d = Daemonish(route_configs)
    workers = d.workers()
    slot = workers._slots[0]
    out = FullOut()
    worker = Worker(1, cast(asyncio.WriteTransport, out))
    gate = WorkerGate("app.test", worker.reporter)

    def deliver() -> None:
        for line in out.lines:
            workers._report(slot, msg.report_of(line))
        out.lines.clear()

    with gate.hold():
        worker.reporter.flush()
        deliver()
        assert d.gates["a"].entered - d.gates["a"].exited == 1
    out.full = True
    worker.reporter.flush()  # the hold's end: skipped
    out.full = False
    worker.reporter.flush()
    deliver()
    held = d.gates["a"]
    assert held.entered - held.exited == 0, "the guest is held for a connection long closed"


async def test_a_stop_during_a_workers_start_drains_it_too() -> None:
    """Daemon.start failing right after the workers started (a DNS port in use) stops them at
    once. A worker still being spawned then missed the drain: it is sent its config, listens
    and serves, and is killed only at grace + STOP_EXTRA_S (past the daemon's own bound)."""
    d = Daemonish(routes({"host": "app.test", "guest": "a", "port": 80}))
    workers = d.workers()
    await workers.start((HOST, 9), SECRET)
    await asyncio.sleep(0)  # one turn: the slot's task is inside create_subprocess_exec
    started = time.monotonic()
    await workers.stop(0)
    took = time.monotonic() - started
    assert took < 3.0, f"stop took {took:.1f}s"
