"""DNS answers per second for a 1,000-guest zone, and the responder's CPU time per query.

The responder runs in its own process (uvloop when installed) over an in-process snapshot of
1,000 guests, with a host route for every tenth guest (idle-watched, half of them asleep, so
parked answers are part of the mix). dnsperf (Debian) sends a mix of A, AAAA, SRV, PTR,
route-host and NXDOMAIN queries over UDP, then over TCP; each transport is run in rounds, the
two alternating, and the median round is reported. CPU µs per query is the responder
process's utime + stime from /proc over the queries it completed. The rate limit is set out of
the way (one client sends everything).

    python3 -m bench.bench_dns [--netns NAME]

`--netns NAME` runs the whole benchmark inside a fresh network namespace (needs root and
`ip`), so nothing else on the machine shares its loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.reversename

from pxproxy.config.companion import DnsConfig
from pxproxy.config.models import RouteConfig
from pxproxy.dns.answer import Answerer
from pxproxy.dns.counters import DnsCounters
from pxproxy.dns.wire import WireHandler
from pxproxy.inventory.ingest import make_nodes, parse_resources
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.routing.route_set import RouteSet, merge
from pxproxy.wake.contract import AlwaysReady, Gate, WakeState

from ._util import row
from .fake_cluster import guest_ip, make_resources

GUESTS = 1000
ZONE = "pve.internal"
ROUNDS = 3
SECONDS = 5
QUERIES_IN_FILE = 20_000
UDP_CLIENTS, TCP_CLIENTS = 4, 8
OUTSTANDING = 64
IN_PROCESS_QUERIES = 20_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ the zone


def snapshot() -> Snapshot:
    resources = parse_resources(json.dumps({"data": make_resources(GUESTS)}), "home")
    guests = [g._replace(ips=(guest_ip(g.vmid),), ip_source="interfaces") for g in resources.guests]
    cluster = ClusterSnapshot.build("home", guests, make_nodes("home", resources.nodes, {}))
    return Snapshot({"home": cluster})


def routes() -> RouteSet:
    configs = [
        RouteConfig.model_validate(
            {"host": f"app-{vmid}.{ZONE}", "guest": str(vmid), "port": 80, "idle": {}}
        )
        for vmid in range(100, 100 + GUESTS, 10)
    ]
    return merge(configs, [])


class _Gate(AlwaysReady):
    def __init__(self, state: WakeState) -> None:
        self.state = state


class StaticSource:
    """The zone as the daemon would give it, frozen: every 20th guest's route is asleep."""

    def __init__(self) -> None:
        self.snapshot = snapshot()
        self.routes = routes()
        self.endpoints = ProxyEndpoints(("127.0.0.1", 8080))
        self._gates = {
            r.config.guest: _Gate(
                WakeState.ASLEEP if int(r.config.guest) % 20 == 0 else WakeState.READY
            )
            for r in self.routes.routes
        }

    def gate_for(self, route: RouteConfig) -> Gate:
        return self._gates.get(route.guest, AlwaysReady())


def settings(port: int) -> DnsConfig:
    return DnsConfig.model_validate(
        {
            "listen": f"127.0.0.1:{port}",
            "zone": ZONE,
            "rate_limit": {"per_client": 1_000_000, "burst": 1_000_000},
        }
    )


def query_lines(n: int, seed: int = 7) -> list[str]:
    """dnsperf's input: "name type" lines, a mix a re-resolving proxy and people would send."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        vmid = 100 + rng.randrange(GUESTS)
        pick = rng.random()
        if pick < 0.55:
            lines.append(f"guest-{vmid}.{ZONE} A")
        elif pick < 0.65:
            lines.append(f"guest-{vmid}.{ZONE} AAAA")
        elif pick < 0.75:
            lines.append(f"_80._tcp.guest-{vmid}.{ZONE} SRV")
        elif pick < 0.85:
            lines.append(f"{dns.reversename.from_address(guest_ip(vmid))} PTR")
        elif pick < 0.95:
            lines.append(f"app-{100 + 10 * rng.randrange(GUESTS // 10)}.{ZONE} A")
        else:
            lines.append(f"nope-{vmid}.{ZONE} A")
    return lines


# ------------------------------------------------------------------ the responder process


def serve(port: int) -> None:
    from pxproxy.dns.server import DnsResponder

    async def run() -> None:
        responder = DnsResponder(settings(port), StaticSource())
        await responder.start()
        responder.answerer.zone()  # build the indexes before the first query is timed
        print(f"ready {responder.port}", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def dnsperf(port: int, datafile: str, mode: str) -> tuple[float, int, int]:
    """(queries per second, completed, lost) of one timed run."""
    clients = UDP_CLIENTS if mode == "udp" else TCP_CLIENTS
    out = subprocess.run(
        [
            "dnsperf",
            "-s",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            mode,
            "-d",
            datafile,
            "-l",
            str(SECONDS),
            "-c",
            str(clients),
            "-q",
            str(OUTSTANDING),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=SECONDS + 60,
    ).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    completed = re.search(r"Queries completed:\s+(\d+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not (qps and completed and lost):
        raise RuntimeError(out)
    return float(qps.group(1)), int(completed.group(1)), int(lost.group(1))


def _name_type(line: str) -> tuple[str, str]:
    name, rdtype = line.split()
    return name, rdtype


def in_process_us() -> tuple[float, float]:
    """The answering alone (parse, answer, render), no sockets: µs per query, for every
    distinct query once (the full dnspython path) and then again (from the answer cache)."""
    source = StaticSource()
    handler = WireHandler(Answerer(settings(0), source), DnsCounters())
    lines = sorted(set(query_lines(IN_PROCESS_QUERIES, seed=11)))
    wires = [dns.message.make_query(*_name_type(line)).to_wire() for line in lines]
    handler.answerer.zone()
    timings = []
    for _ in range(2):
        t0 = time.perf_counter()
        for wire in wires:
            handler.handle(wire, udp=True)
        timings.append((time.perf_counter() - t0) / len(wires) * 1e6)
    assert handler.cache_hits == len(wires)
    return timings[0], timings[1]


def measure() -> None:
    if shutil.which("dnsperf") is None:
        raise SystemExit("dnsperf is not installed (Debian: apt-get install dnsperf)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_dns", "--serve", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.match(r"ready (\d+)", line)
        if not found:
            raise RuntimeError(f"the responder did not start: {line!r}")
        port = int(found.group(1))
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
            fh.write("\n".join(query_lines(QUERIES_IN_FILE)) + "\n")
            datafile = fh.name
        results: dict[str, list[tuple[float, float, int]]] = {"udp": [], "tcp": []}
        for _ in range(ROUNDS):
            for mode in ("udp", "tcp"):  # alternating: drift on a shared machine hits both
                before = cpu_seconds(proc.pid)
                qps, completed, lost = dnsperf(port, datafile, mode)
                cpu_us = (cpu_seconds(proc.pid) - before) * 1e6 / max(completed, 1)
                results[mode].append((qps, cpu_us, lost))
        os.unlink(datafile)
    finally:
        proc.terminate()
        proc.wait()
    per_query = in_process_us()
    print(f"DNS responder, {GUESTS}-guest zone, dnsperf, {ROUNDS} rounds of {SECONDS} s (median)")
    for mode, rounds in results.items():
        qps = statistics.median(r[0] for r in rounds)
        cpu = statistics.median(r[1] for r in rounds)
        lost = sum(r[2] for r in rounds)
        clients = UDP_CLIENTS if mode == "udp" else TCP_CLIENTS
        row(
            f"{mode.upper()} answers per second ({clients} clients, {OUTSTANDING} in flight)",
            f"{qps:,.0f}/s",
        )
        row(f"{mode.upper()} responder CPU per query", f"{cpu:.1f} µs")
        row(f"{mode.upper()} queries lost (all rounds)", f"{lost}")
        print(f"    rounds: {', '.join(f'{r[0]:,.0f}' for r in rounds)}")
    cold, warm = per_query
    row("in-process, no sockets: parse + answer + render (dnspython)", f"{cold:.1f} µs")
    row("in-process, no sockets: the same query again (answer cache)", f"{warm:.1f} µs")


def in_netns(name: str) -> None:
    """Run this benchmark again inside a new network namespace with only loopback up."""
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-m", "bench.bench_dns"], check=True
        )
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, metavar="PORT")
    parser.add_argument("--netns", metavar="NAME")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
    elif args.netns:
        in_netns(args.netns)
    else:
        measure()


if __name__ == "__main__":
    main()
