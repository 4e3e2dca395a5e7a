"""`proxy.workers` through the daemon against the lab: worker processes accept on the proxy's
port beside the daemon, serve ready guests themselves, and leave everything else to the
daemon, so one guest is woken once however many processes its clients reach. Which process
serves a connection is read from /proc (the socket's inode in the process's descriptors),
not guessed."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.wake.waker import Waker

from ..certificates import TestCa
from ..support import lab_cluster, wait_for

# vmids 7261-7269: used by no other test (the lab derives guest addresses from vmids).
ALWAYS, SLEEPY, LATER = 7261, 7262, 7263
CLIENT = "127.0.0.2"  # the clients' own address, so a relayed peer is told from the relay's


def _proc_tcp_key(host: str, port: int) -> str:
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def serving_pid(writer: asyncio.StreamWriter, pids: list[int]) -> int | None:
    """The process among `pids` holding the server side of this client connection."""
    client_host, client_port = writer.get_extra_info("sockname")[:2]
    server_host, server_port = writer.get_extra_info("peername")[:2]
    local, remote = _proc_tcp_key(server_host, server_port), _proc_tcp_key(client_host, client_port)
    inode = None
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = fields[9]
    if inode is None:
        return None
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


class Conn:
    """One kept-alive client connection, speaking just enough HTTP/1.1."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(
        self, host: str, path: str = "/", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await asyncio.wait_for(self._response(), 30)

    async def _response(self) -> tuple[int, dict[str, str], bytes]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *field_lines = head.split("\r\n")
        fields = {}
        for line in field_lines:
            if line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            body = await self.reader.readexactly(int(fields["content-length"]))
        else:
            body = b""
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if not size:
                    break
                body += chunk[:-2]
        return int(status_line.split()[1]), fields, body

    async def websocket(self, host: str) -> None:
        """Open a WebSocket to the lab guest's echo (/ws) on this connection."""
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        switched = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        assert switched.startswith(b"HTTP/1.1 101"), switched

    def close(self) -> None:
        self.writer.close()


async def connections_by_process(
    port: int, pids: list[int], ssl_context: ssl.SSLContext | None = None, name: str = ""
) -> dict[int, Conn]:
    """A connection served by each of `pids` (the kernel spreads new ones: open until every
    process has one)."""
    found: dict[int, Conn] = {}
    spare: list[Conn] = []

    async def every_process_has_one() -> bool:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            local_addr=(CLIENT, 0),
            ssl=ssl_context,
            server_hostname=name if ssl_context else None,
        )
        conn = Conn(reader, writer)
        pid = None
        for _ in range(100):  # accepted by then, but the server's side may not be adopted yet
            pid = serving_pid(writer, pids)
            if pid is not None:
                break
            await asyncio.sleep(0.01)
        if pid is not None and pid not in found:
            found[pid] = conn
        else:
            spare.append(conn)
        return set(found) == set(pids)

    await wait_for(every_process_has_one, 30, f"a connection to each of {pids}")
    for conn in spare:
        conn.close()
    return found


async def _guests(lab: LabServer, *, sleepy: str, later: bool = False) -> None:
    guests = [(ALWAYS, "always", "running"), (SLEEPY, "sleepy", sleepy)]
    for vmid, name, status in guests + ([(LATER, "later", "running")] if later else []):
        lab.cluster.add_guest(vmid, "lxc", name, "pve1", status=status, static_ip=True)
    await lab.cluster.open()  # the guests' servers listen


def _config(lab: LabServer, tmp: Path, **extra: Any) -> Path:
    config = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "proxy": {"workers": 2},
        "routes": [
            {"host": "always.w.test", "guest": f"lab:{ALWAYS}", "port": 8080},
            {
                "host": "sleepy.w.test",
                "guest": f"lab:{SLEEPY}",
                "port": 8080,
                "idle": {"timeout": "1h", "wake_timeout": "30s"},
            },
        ],
        **extra,
    }
    path = tmp / "pxproxy.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _started(path: Path) -> Daemon:
    daemon = Daemon(load_config(str(path)), config_path=path)
    await daemon.start()
    workers = daemon.workers
    assert workers is not None
    await wait_for(lambda: all(p.first_cycle.is_set() for p in daemon.pollers), 10, "a poll")
    await wait_for(
        lambda: all(w["running"] and w["listening"] for w in workers.describe()),
        30,
        "the worker listening",
    )
    return daemon


def _worker_count(daemon: Daemon, route: str) -> int:
    assert daemon.workers is not None
    return sum(
        sum(s.routes[route].by_status.values()) for s in daemon.workers.stats() if route in s.routes
    )


def _own_count(daemon: Daemon, route: str) -> int:
    stats = daemon.metrics.proxy.routes.get(route)
    return sum(stats.by_status.values()) if stats else 0


def _waker(daemon: Daemon) -> Waker:
    gate = daemon.wake.gate_for(daemon.config.routes[1])
    assert isinstance(gate, Waker)
    return gate


async def test_workers_serve_ready_guests_and_leave_wakes_to_the_daemon(
    lab_server: LabServer, tmp_path: Path
) -> None:
    await _guests(lab_server, sleepy="stopped")
    daemon = await _started(_config(lab_server, tmp_path))
    conns: dict[int, Conn] = {}
    try:
        assert daemon.workers is not None
        assert daemon.proxy_port is not None
        (worker_pid,) = daemon.workers.pids()
        conns = await connections_by_process(daemon.proxy_port, [os.getpid(), worker_pid])
        on_worker, on_daemon = conns[worker_pid], conns[os.getpid()]

        # A ready guest: the worker forwards itself, and the guest hears the real client,
        # not a forged relay field.
        status, _, body = await on_worker.get(
            "always.w.test", "/headers", {"X-Pxproxy-Peer": "10.9.9.9"}
        )
        assert status == 200, body
        seen = json.loads(body)
        assert seen["X-Forwarded-For"] == CLIENT
        assert seen["X-Pxproxy-Peer"] == "10.9.9.9"  # a client's own header, passed as any
        await wait_for(lambda: _worker_count(daemon, "always.w.test") == 1, 10, "the report")
        assert _own_count(daemon, "always.w.test") == 0

        # A sleeping guest: a browser gets the daemon's loading page through the worker...
        status, fields, page = await on_worker.get("sleepy.w.test", "/", {"Accept": "text/html"})
        assert status == 503  # so that nothing caches it as the site
        assert b"<title>Starting " in page
        assert fields["content-type"].startswith("text/html")
        # ...and held requests on both processes wait for one wake.
        held = await asyncio.gather(
            on_worker.get("sleepy.w.test", "/headers"), on_daemon.get("sleepy.w.test", "/headers")
        )
        assert [s for s, _, _ in held] == [200, 200]
        relayed = json.loads(held[0][2])
        assert relayed["X-Forwarded-For"] == CLIENT  # the relay kept the client's address
        assert not any(k.lower().startswith("x-pxproxy-") for k in relayed)
        assert [t.type for t in lab_server.tasks if t.id == str(SLEEPY)] == ["vzstart"]
        assert _worker_count(daemon, "sleepy.w.test") == 0  # the daemon counted those

        # Ready now: the daemon says so, and the worker serves the guest itself. Its
        # requests are the daemon's idle-watch's activity.
        waker = _waker(daemon)
        before = waker.last_activity_at()

        async def served_by_the_worker() -> bool:
            status, _, _ = await on_worker.get("sleepy.w.test", "/healthz")
            assert status == 200
            return _worker_count(daemon, "sleepy.w.test") > 0

        await wait_for(served_by_the_worker, 10, "the worker serving the woken guest")
        await wait_for(lambda: waker.last_activity_at() > before, 10, "the worker's activity")

        # A WebSocket on the worker holds the guest awake in the daemon until it closes.
        await on_worker.websocket("sleepy.w.test")
        await wait_for(lambda: waker._holds == 1, 10, "the worker's hold in the daemon")
        on_worker.close()
        del conns[worker_pid]
        await wait_for(lambda: waker._holds == 0, 10, "the hold let go")

        # /metrics adds the worker's counters to the daemon's.
        for _ in range(3):
            assert (await on_daemon.get("always.w.test", "/healthz"))[0] == 200
        expected = 'pxproxy_proxy_requests_total{route="always.w.test",status="200"} 4.0'
        await wait_for(lambda: expected in _metrics(daemon), 10, "the sum in /metrics")
    finally:
        for conn in conns.values():
            conn.close()
        await daemon.stop()


def _metrics(daemon: Daemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(daemon.metrics.registry).decode()


async def test_a_dead_worker_lets_go_and_is_started_again_and_stops_with_the_daemon(
    lab_server: LabServer, tmp_path: Path
) -> None:
    await _guests(lab_server, sleepy="running")
    daemon = await _started(_config(lab_server, tmp_path))
    conns: dict[int, Conn] = {}
    try:
        workers = daemon.workers
        assert workers is not None
        assert daemon.proxy_port is not None
        (first,) = workers.pids()
        await wait_for(lambda: _waker(daemon).state.value == "ready", 10, "sleepy ready")
        conns = await connections_by_process(daemon.proxy_port, [os.getpid(), first])
        on_worker = conns[first]

        async def served_by_the_worker() -> bool:
            # Until the daemon's word that the guest is ready arrives, the worker relays.
            assert (await on_worker.get("sleepy.w.test", "/healthz"))[0] == 200
            return _worker_count(daemon, "sleepy.w.test") > 0

        await wait_for(served_by_the_worker, 10, "the worker serving the guest")
        await on_worker.websocket("sleepy.w.test")
        waker = _waker(daemon)
        await wait_for(lambda: waker._holds >= 1, 10, "the hold")

        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: waker._holds == 0, 10, "the dead worker's hold let go")
        health = await _health(daemon)
        assert health["status"] == "degraded", health  # its share of connections goes on
        await wait_for(
            lambda: (
                [w["restarts"] for w in workers.describe()] == [1]
                and all(w["running"] and w["listening"] for w in workers.describe())
            ),
            30,
            "the worker started again",
        )
        (second,) = workers.pids()
        assert second != first
        assert (await _health(daemon))["status"] == "ok"
        # The daemon served on meanwhile.
        assert (await conns[os.getpid()].get("always.w.test", "/healthz"))[0] == 200
    finally:
        for conn in conns.values():
            conn.close()
        await daemon.stop()
    # Stopped with the daemon, and reaped.
    assert not Path(f"/proc/{second}").exists()  # noqa: ASYNC240 (procfs: no blocking)


async def _health(daemon: Daemon) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.api_port)
    conn = Conn(reader, writer)
    try:
        status, _, body = await conn.get("127.0.0.1", "/health")
        assert status == 200
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        conn.close()


async def test_workers_follow_reloads_and_certificate_renewals(
    lab_server: LabServer, tmp_path: Path
) -> None:
    await _guests(lab_server, sleepy="running", later=True)
    ca = TestCa()
    cert = ca.issue("always.w.test")
    files = cert.write(tmp_path, "always")
    path = _config(
        lab_server,
        tmp_path,
        proxy={"workers": 2, "tls": {"certificates": [files.model_dump()]}},
    )
    daemon = await _started(path)
    conns: dict[int, Conn] = {}
    try:
        workers = daemon.workers
        assert workers is not None
        assert daemon.proxy_port is not None
        (worker_pid,) = workers.pids()
        context = ca.client_context()
        pids = [os.getpid(), worker_pid]
        conns = await connections_by_process(daemon.proxy_port, pids, context, "always.w.test")
        status, _, body = await conns[worker_pid].get("always.w.test", "/headers")
        assert status == 200
        assert json.loads(body)["X-Forwarded-Proto"] == "https"
        assert _serial(conns[worker_pid]) == cert.serial

        # A renewal and a route added by the reload reach the worker.
        renewed = ca.issue("always.w.test")
        renewed.write(tmp_path, "always")
        config = yaml.safe_load(path.read_text())
        config["routes"].append({"host": "later.w.test", "guest": f"lab:{LATER}", "port": 8080})
        path.write_text(yaml.safe_dump(config))
        assert await daemon.reload()

        async def later_served() -> bool:
            status, _, _ = await conns[worker_pid].get("later.w.test", "/healthz")
            return status == 200 and _worker_count(daemon, "later.w.test") > 0

        await wait_for(later_served, 10, "the new route on the worker")
        for conn in conns.values():
            conn.close()
        fresh = await connections_by_process(daemon.proxy_port, pids, context, "always.w.test")
        conns = fresh
        assert _serial(conns[worker_pid]) == renewed.serial
    finally:
        for conn in conns.values():
            conn.close()
        await daemon.stop()


def _serial(conn: Conn) -> int:
    der = conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def test_the_relay_listener_serves_workers_only(
    lab_server: LabServer, tmp_path: Path
) -> None:
    await _guests(lab_server, sleepy="running")
    daemon = await _started(_config(lab_server, tmp_path))
    try:
        relay = daemon._relay_listener
        assert relay is not None
        assert relay.port is not None
        for extra in ({}, {"X-Pxproxy-Relay": "guessed", "X-Pxproxy-Peer": "10.1.1.1"}):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            conn = Conn(reader, writer)
            status, _, body = await conn.get(
                "always.w.test", "/headers", {**extra, "X-Pxproxy-Scheme": "http"}
            )
            conn.close()
            assert status == 403, body
    finally:
        await daemon.stop()
