"""The reverse proxy side by side with nginx, HAProxy, Traefik and Caddy, in one run:

- small responses, keep-alive (wrk at 8 and 64 connections) to two upstreams: the lab guest
  (aiohttp in the `pxproxy lab` process, 127.10.0.100:8080) and a fast upstream on the guest's
  address, port 8081 (nginx, one worker, `return 200` with the guest's body and X-Lab-Guest).
  Per cell: req/s, ratio to nginx, the p50/p99 added over a direct connection, and CPU µs per
  request of the proxy's process tree (utime + stime from /proc ÷ requests; nginx's workers
  included). The order of the targets rotates each round; figures are medians of the rounds.
  A cell is marked when the upstream, not the proxy, is the cap: within 5 % of direct, or the
  upstream's own process at 90 % of a core or more. pxproxy runs twice here: `pxproxy` (one
  process, proxy.workers 1) and `pxproxy-w2` (proxy.workers 2: the daemon and one worker on
  its port, SO_REUSEPORT; CPU summed over both), with the ratio of the two;
- a 1 GiB body through each (curl), from both upstreams (the guest's is chunked from Python,
  the fast one's a file with Content-Length): throughput ÷ nginx's;
- 1,000 idle WebSockets through pxproxy and through nginx, RSS;
- 10,000 idle keep-alive client connections held by pxproxy, RSS before, held and per
  connection (RLIMIT_NOFILE is raised here, so the daemon inherits it, and checked on it);
- goals, each with PASS or MISS.

The body, WebSocket and idle parts measure `pxproxy` only, not `pxproxy-w2`.

nginx runs with one worker per core, an upstream keep-alive pool and `proxy_buffering off`;
HAProxy, Traefik and Caddy with a plain Host route to each upstream (bench/_proxy_routes.py).
Needs wrk, nginx, HAProxy and curl (`bash bench/setup.sh`; Traefik and Caddy come with the test
dependencies). Run it in a private network namespace, from the repository root:

    ip netns add bench; ip netns exec bench ip link set lo up
    ip netns exec bench python3 -m bench.bench_proxy [--quick] [--only pxproxy,pxproxy-w2,nginx]
        [--parts rps,stream,websockets,idle] [--seconds 5] [--rounds 3]
    ip netns exec bench python3 -m bench.bench_proxy --profile 15   # py-spy, pxproxy at c64

`--quick` (or PXPROXY_BENCH_QUICK=1): 2 s per wrk run, one round, 2 s holds. `--only` keeps
direct (the baseline) and the named proxies. `--profile N` runs only a py-spy record of the
pxproxy daemon for N seconds under wrk c64 to the lab guest and prints its top frames
(`pip install py-spy`). `--code DIR` runs the lab and the daemon from another checkout (e.g.
`git worktree add /tmp/base HEAD`): the code before a change. The machine is shared: the
"others" column is the CPU other processes used during each run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.e2e.real_proxies import Kind

from ._idle_clients import HeldConnections, hold_connections
from ._profile import print_profile, record, summarise
from ._proxy_routes import routed_proxy
from ._stack import FAST_BIG_BYTES, FAST_HOST, FAST_PORT, GUEST_IP, GUEST_PORT, HOST, stack
from ._util import cpu_ticks, machine_busy_ticks, own_ticks, raise_nofile, tree_pids
from .bench_websockets import HeldWebSockets, hold_websockets

TARGETS = ("direct", "nginx", "haproxy", "traefik", "caddy", "pxproxy", "pxproxy-w2")
W2 = "pxproxy-w2"  # a second daemon with proxy.workers 2; the small-responses part only
LABELS = {
    "haproxy": "HAProxy",
    "traefik": "Traefik",
    "caddy": "Caddy",
    W2: "pxproxy ×2 processes",
}
KINDS: dict[str, Kind] = {"haproxy": "haproxy", "traefik": "traefik", "caddy": "caddy"}
PARTS = ("rps", "stream", "websockets", "idle")
CONNECTIONS = (8, 64)
SECONDS, ROUNDS, HOLD_S = 5.0, 3, 5.0
QUICK_SECONDS, QUICK_ROUNDS, QUICK_HOLD_S = 2.0, 1, 2.0
WARMUP_S = 1
BIG = 1024**3
WEBSOCKETS = 1000
IDLE_CONNECTIONS = 10_000
# The upstream is the cap when a proxy gets this share of direct, or the upstream's process
# uses this share of one core (the guest is one Python process, the fast upstream one worker).
CAP_OF_DIRECT = 0.95
CAP_CORE = 0.9
GOAL_GUEST, GOAL_FAST, GOAL_STREAM = 0.9, 0.6, 0.9
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROFILE_OUT = Path("/tmp/pxproxy-profile.txt")


def label(name: str) -> str:
    return LABELS.get(name, name)


@dataclass(frozen=True)
class Options:
    targets: tuple[str, ...]
    parts: tuple[str, ...]
    seconds: float
    rounds: int
    hold_s: float
    profile_s: float | None
    code: str | None


def _names(text: str, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}: choose from "
            + ",".join(allowed)
        )
    return names


def parse_args(argv: Sequence[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python3 -m bench.bench_proxy")
    parser.add_argument(
        "--only",
        type=lambda t: _names(t, TARGETS, "target"),
        default=TARGETS,
        help="comma-separated targets (direct is always measured): " + ",".join(TARGETS),
    )
    parser.add_argument(
        "--parts",
        type=lambda t: _names(t, PARTS, "part"),
        default=PARTS,
        help="comma-separated parts to run: " + ",".join(PARTS),
    )
    quick_env = os.environ.get("PXPROXY_BENCH_QUICK", "") not in ("", "0")
    parser.add_argument("--quick", action="store_true", default=quick_env)
    parser.add_argument("--seconds", type=float, help="per wrk run")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--profile", type=float, metavar="SECONDS", dest="profile_s")
    parser.add_argument("--code", metavar="DIR", help="run the lab and daemon from this checkout")
    args = parser.parse_args(argv)
    seconds = (
        args.seconds if args.seconds is not None else (QUICK_SECONDS if args.quick else SECONDS)
    )
    rounds = args.rounds if args.rounds is not None else (QUICK_ROUNDS if args.quick else ROUNDS)
    if seconds < 1 or rounds < 1:
        parser.error("--seconds must be >= 1 and --rounds >= 1")
    if args.profile_s is not None and args.profile_s < 1:
        parser.error("--profile needs at least 1 second")
    targets = tuple(t for t in TARGETS if t == "direct" or t in args.only)
    return Options(
        targets,
        args.parts,
        seconds,
        rounds,
        QUICK_HOLD_S if args.quick else HOLD_S,
        args.profile_s,
        args.code,
    )


@dataclass(frozen=True)
class Upstream:
    key: str
    title: str
    host: str  # the Host every proxy routes to it
    direct: str
    pid: int  # the upstream's process (tree)


@dataclass(frozen=True)
class Target:
    name: str
    url: str | None  # None: straight to the upstream
    pids: tuple[int, ...]  # the main process first; the CPU of all of them and their children

    @property
    def pid(self) -> int | None:
        return self.pids[0] if self.pids else None

    def url_for(self, upstream: Upstream) -> str:
        return self.url or upstream.direct

    def cpu_ticks(self) -> int:
        """Of its processes and their descendants, each counted once (a daemon's workers
        are its children too)."""
        trees = {pid: set(tree_pids(pid)) for pid in self.pids}
        roots = [p for p in self.pids if not any(p in t for q, t in trees.items() if q != p)]
        return sum(cpu_ticks(p) for p in roots)


@dataclass(frozen=True)
class WrkOut:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str  # wrk's "Socket errors" line, if any


@dataclass(frozen=True)
class Run:
    out: WrkOut
    proxy_cpu_s: float | None
    upstream_cpu_s: float
    wall_s: float
    others_cores: float  # CPU used meanwhile by processes not of this benchmark


class OtherLoad:
    """CPU that processes outside this benchmark use while it measures (the machine is
    shared: a busy neighbour explains a slow cell)."""

    def __init__(self) -> None:
        self._busy, self._own, self._at = machine_busy_ticks(), own_ticks(), time.monotonic()

    def cores(self) -> float:
        busy, own = machine_busy_ticks() - self._busy, own_ticks() - self._own
        return max(0.0, (busy - own) / CLK_TCK / max(time.monotonic() - self._at, 1e-3))


def _ms(text: str) -> float:
    """wrk's "1.23ms" / "850.00us" / "1.02s" in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


async def wrk(url: str, host: str, connections: int, seconds: float) -> WrkOut:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-H"]
    args += [f"Host: {host}", url + "/"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    # The latency distribution lines start the line ("     50%    1.23ms"); a "+/- Stdev"
    # column like "81.99%" elsewhere must not match.
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and requests and p50 and p99) or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {url} (Host {host}) failed:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    return WrkOut(
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        int(requests.group(1)),
        errors.group(0) if errors else "",
    )


async def measure(target: Target, upstream: Upstream, connections: int, seconds: float) -> Run:
    proxy_before = target.cpu_ticks()
    upstream_before = cpu_ticks(upstream.pid)
    others = OtherLoad()
    started = time.monotonic()
    out = await wrk(target.url_for(upstream), upstream.host, connections, seconds)
    wall = time.monotonic() - started
    proxy_cpu = (target.cpu_ticks() - proxy_before) / CLK_TCK if target.pids else None
    upstream_cpu = (cpu_ticks(upstream.pid) - upstream_before) / CLK_TCK
    return Run(out, proxy_cpu, upstream_cpu, wall, others.cores())


@dataclass(frozen=True)
class Cell:
    """The medians of one target's runs against one upstream at one concurrency."""

    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None  # proxy CPU per request
    upstream_core: float  # the upstream's CPU ÷ wall time
    others_cores: float
    errors: list[str]

    @classmethod
    def of(cls, runs: list[Run]) -> Cell:
        cpu = [
            r.proxy_cpu_s * 1e6 / max(r.out.requests, 1) for r in runs if r.proxy_cpu_s is not None
        ]
        return cls(
            statistics.median(r.out.rps for r in runs),
            statistics.median(r.out.p50_ms for r in runs),
            statistics.median(r.out.p99_ms for r in runs),
            statistics.median(cpu) if cpu else None,
            statistics.median(r.upstream_cpu_s / r.wall_s for r in runs),
            statistics.median(r.others_cores for r in runs),
            [r.out.errors for r in runs if r.out.errors],
        )


def rotated(items: Sequence[Target], by: int) -> list[Target]:
    k = by % len(items)
    return [*items[k:], *items[:k]]


Cells = dict[tuple[str, int, str], Cell]


async def small_responses(targets: list[Target], upstreams: list[Upstream], opts: Options) -> Cells:
    for upstream in upstreams:
        for target in targets:  # warm pools and caches; not counted
            await wrk(target.url_for(upstream), upstream.host, 64, WARMUP_S)
    runs: dict[tuple[str, int, str], list[Run]] = {}
    for rnd in range(opts.rounds):
        for upstream in upstreams:
            for c in CONNECTIONS:
                for target in rotated(targets, rnd):
                    run = await measure(target, upstream, c, opts.seconds)
                    runs.setdefault((upstream.key, c, target.name), []).append(run)
    return {key: Cell.of(each) for key, each in runs.items()}


def cap_reason(cell: Cell, direct: Cell, is_direct: bool) -> str:
    reasons = []
    if not is_direct and cell.rps >= CAP_OF_DIRECT * direct.rps:
        reasons.append(f">= {CAP_OF_DIRECT:.0%} of direct")
    if cell.upstream_core >= CAP_CORE:
        reasons.append(f"upstream at {cell.upstream_core:.0%} of a core")
    return "upstream is the cap: " + ", ".join(reasons) if reasons else ""


def print_small(
    cells: Cells, targets: list[Target], upstreams: list[Upstream], opts: Options
) -> None:
    width = max(9, *(len(label(t.name)) + 1 for t in targets))
    for upstream in upstreams:
        for c in CONNECTIONS:
            print(
                f"\n{upstream.title}, wrk -c{c} keep-alive, {opts.seconds:g} s x "
                f"{opts.rounds} rounds (rotated), medians"
            )
            print(
                f"  {'target':<{width}}{'req/s':>9}{'x nginx':>9}{'+p50 ms':>9}{'+p99 ms':>9}"
                f"{'CPU us/req':>12}{'upstream CPU':>14}{'others':>8}  note"
            )
            direct = cells[(upstream.key, c, "direct")]
            nginx = cells.get((upstream.key, c, "nginx"))
            for target in targets:
                cell = cells[(upstream.key, c, target.name)]
                is_direct = target.name == "direct"
                ratio = f"{cell.rps / nginx.rps:.2f}" if nginx else "-"
                p50 = "-" if is_direct else f"{cell.p50_ms - direct.p50_ms:+.2f}"
                p99 = "-" if is_direct else f"{cell.p99_ms - direct.p99_ms:+.2f}"
                cpu = "-" if cell.cpu_us is None else f"{cell.cpu_us:.0f}"
                note = cap_reason(cell, direct, is_direct)
                if cell.errors:
                    note += f" [{len(cell.errors)} run(s) with {cell.errors[0]}]"
                print(
                    f"  {label(target.name):<{width}}{cell.rps:>9,.0f}{ratio:>9}{p50:>9}{p99:>9}"
                    f"{cpu:>12}{cell.upstream_core:>13.0%}{cell.others_cores:>8.2f}  {note}"
                )
            print(
                f"  direct p50/p99: {direct.p50_ms:.2f}/{direct.p99_ms:.2f} ms; upstream CPU: its"
                " process tree's CPU time / wall time; others: cores used by other processes"
            )
    print_workers_ratio(cells, upstreams)


def print_workers_ratio(cells: Cells, upstreams: list[Upstream]) -> None:
    """pxproxy-w2 ÷ pxproxy in every cell: what the second process buys."""
    pairs = [
        (upstream, c, cells.get((upstream.key, c, "pxproxy")), cells.get((upstream.key, c, W2)))
        for upstream in upstreams
        for c in CONNECTIONS
    ]
    if not any(px and w2 for _, _, px, w2 in pairs):
        return
    print(f"\n{label(W2)} (proxy.workers 2) ÷ pxproxy (proxy.workers 1), medians")
    print(f"  {'cell':<12}{'req/s':>9}{'CPU us/req':>12}{'+p99 ms':>10}")
    for upstream, c, px, w2 in pairs:
        if px is None or w2 is None:
            continue
        cpu = f"{w2.cpu_us / px.cpu_us:.2f}" if w2.cpu_us and px.cpu_us else "-"
        print(
            f"  {f'c{c} {upstream.key}':<12}{w2.rps / px.rps:>9.2f}{cpu:>12}"
            f"{w2.p99_ms - px.p99_ms:>+10.2f}"
        )
    print("  (+p99 ms: pxproxy-w2's p99 minus pxproxy's)")


async def download(url: str, host: str, size: int) -> float:
    """Seconds for curl to fetch `url` (Host `host`), which must be `size` bytes."""
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}"]
    args += ["-H", f"Host: {host}", url]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    seconds, got = (await proc.communicate())[0].decode().split()
    if int(got) != size:
        raise RuntimeError(f"{url}: got {got} bytes, expected {size}")
    return float(seconds)


@dataclass(frozen=True)
class Stream:
    seconds: float
    cpu_s: float | None  # the proxy's, for the whole body
    upstream_core: float


async def streams(
    targets: list[Target], upstreams: list[Upstream], opts: Options
) -> dict[tuple[str, str], Stream]:
    got: dict[tuple[str, str], list[Stream]] = {}
    for upstream in upstreams:  # the fast upstream's file into the page cache; not counted
        await download(upstream.direct + f"/big?bytes={BIG}", upstream.host, BIG)
    for rnd in range(opts.rounds):
        for upstream in upstreams:
            for target in rotated(targets, rnd):
                before = target.cpu_ticks()
                upstream_before = cpu_ticks(upstream.pid)
                seconds = await download(
                    target.url_for(upstream) + f"/big?bytes={BIG}", upstream.host, BIG
                )
                cpu = (target.cpu_ticks() - before) / CLK_TCK if target.pids else None
                upstream_cpu = (cpu_ticks(upstream.pid) - upstream_before) / CLK_TCK
                got.setdefault((upstream.key, target.name), []).append(
                    Stream(seconds, cpu, upstream_cpu / seconds)
                )
    return {
        key: Stream(
            statistics.median(s.seconds for s in each),
            _median_or_none([s.cpu_s for s in each]),
            statistics.median(s.upstream_core for s in each),
        )
        for key, each in got.items()
    }


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def print_streams(
    results: dict[tuple[str, str], Stream], targets: list[Target], upstreams: list[Upstream]
) -> None:
    for upstream in upstreams:
        print(f"\n1 GiB body (curl) from {upstream.title}, medians")
        print(f"  {'target':<9}{'MiB/s':>9}{'x nginx':>9}{'CPU s':>8}{'upstream CPU':>14}  note")
        direct = results[(upstream.key, "direct")]
        nginx = results.get((upstream.key, "nginx"))
        for target in targets:
            s = results[(upstream.key, target.name)]
            ratio = f"{nginx.seconds / s.seconds:.2f}" if nginx else "-"
            cpu = "-" if s.cpu_s is None else f"{s.cpu_s:.2f}"
            note = ""
            if target.name != "direct" and s.seconds <= direct.seconds / CAP_OF_DIRECT:
                note = f"upstream is the cap: >= {CAP_OF_DIRECT:.0%} of direct"
            elif s.upstream_core >= CAP_CORE:
                note = f"upstream is the cap: at {s.upstream_core:.0%} of a core"
            print(
                f"  {label(target.name):<9}{BIG / s.seconds / 2**20:>9,.0f}{ratio:>9}{cpu:>8}"
                f"{s.upstream_core:>13.0%}  {note}"
            )


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def print_websockets(held: dict[str, HeldWebSockets], idle_s: float) -> None:
    print(f"\n{WEBSOCKETS} idle WebSockets to the lab guest's /ws echo, held {idle_s:g} s")
    for name, h in held.items():
        print(
            f"  {label(name):<9} open and echoing {h.alive}/{h.count}; RSS {_mib(h.rss_before)}"
            f" -> {_mib(h.rss_held)}, {h.per_socket / 1024:.1f} KiB per WebSocket"
        )


def print_idle(held: HeldConnections, hold_s: float, limit: int) -> None:
    print(
        f"\n{held.count:,} idle keep-alive client connections held by pxproxy for {hold_s:g} s "
        f"(daemon RLIMIT_NOFILE {limit})"
    )
    print(
        f"  answered the first request {held.opened:,}, the second after the hold {held.kept:,}"
        f" (opened in {held.open_s:.1f} s)"
    )
    print(
        f"  RSS {_mib(held.rss_before)} before, {_mib(held.rss_held)} held, "
        f"{_mib(held.rss_after)} after they closed; "
        f"{held.per_connection / 1024:.1f} KiB per connection"
    )


def _goal(name: str, value: str, ok: bool | None) -> None:
    mark = "n/a " if ok is None else ("PASS" if ok else "MISS")
    print(f"  {mark}  {name:<62} {value}")


def print_goals(
    cells: Cells | None,
    stream_results: dict[tuple[str, str], Stream] | None,
    held_ws: dict[str, HeldWebSockets] | None,
    held_idle: HeldConnections | None,
    upstreams: list[Upstream],
) -> None:
    print("\ngoals")
    for upstream in upstreams:
        goal = GOAL_GUEST if upstream.key == "guest" else GOAL_FAST
        for c in CONNECTIONS:
            where = f"c{c} {upstream.key}"
            px = cells.get((upstream.key, c, "pxproxy")) if cells else None
            nginx = cells.get((upstream.key, c, "nginx")) if cells else None
            if px and nginx:
                ratio = px.rps / nginx.rps
                _goal(f"{where}: pxproxy >= {goal}x nginx", f"{ratio:.2f}", ratio >= goal)
            else:
                _goal(f"{where}: pxproxy >= {goal}x nginx", "not measured", None)
            rivals = {
                n: cells[(upstream.key, c, n)]
                for n in ("traefik", "caddy")
                if cells and (upstream.key, c, n) in cells
            }
            if px and len(rivals) == 2:
                best = max(rivals, key=lambda n: rivals[n].rps)
                lead = px.rps / rivals[best].rps
                _goal(
                    f"{where}: pxproxy ahead of Traefik and Caddy",
                    f"{lead:.2f}x {label(best)}",
                    lead > 1,
                )
            else:
                _goal(f"{where}: pxproxy ahead of Traefik and Caddy", "not measured", None)
    for upstream in upstreams:
        px_s = stream_results.get((upstream.key, "pxproxy")) if stream_results else None
        nginx_s = stream_results.get((upstream.key, "nginx")) if stream_results else None
        name = f"1 GiB from {upstream.key}: pxproxy >= {GOAL_STREAM}x nginx"
        if px_s and nginx_s:
            ratio = nginx_s.seconds / px_s.seconds
            _goal(name, f"{ratio:.2f}", ratio >= GOAL_STREAM)
        else:
            _goal(name, "not measured", None)
    px_ws = held_ws.get("pxproxy") if held_ws else None
    _goal(
        f"{WEBSOCKETS} WebSockets held by pxproxy",
        f"{px_ws.alive}/{px_ws.count}" if px_ws else "not measured",
        px_ws.alive == px_ws.count if px_ws else None,
    )
    _goal(
        f"{IDLE_CONNECTIONS:,} idle keep-alive connections held by pxproxy",
        f"{held_idle.kept:,}/{held_idle.count:,}" if held_idle else "not measured",
        held_idle.kept == held_idle.count if held_idle else None,
    )


async def _until_ok(url: str, host: str, timeout_s: float = 30) -> None:
    """Until `url` answers 200 for Host `host` (Traefik loads its routes after it listens)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url + "/", headers={"Host": host}) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered 200 for Host {host}")
            await asyncio.sleep(0.1)


async def profile(seconds: float, code: str | None) -> None:
    """py-spy on the pxproxy daemon under wrk c64 to the lab guest."""
    async with stack(code=code) as s:
        await wrk(s.pxproxy, HOST, 64, WARMUP_S)
        load = asyncio.create_task(wrk(s.pxproxy, HOST, 64, seconds + 3))
        try:
            await asyncio.sleep(1)  # into the steady state of the load
            await record(s.pxproxy_pid, seconds, PROFILE_OUT)
            out = await load
        finally:
            if not load.done():
                load.cancel()
    print(f"py-spy on pxproxy (pid {s.pxproxy_pid}) under wrk -c64 to the lab guest")
    print(f"  wrk meanwhile: {out.rps:,.0f} req/s (py-spy --nonblocking beside it)")
    print(f"  raw profile: {PROFILE_OUT} (py-spy record --format raw -F)")
    print_profile(summarise(await asyncio.to_thread(PROFILE_OUT.read_text)))


async def main(opts: Options) -> None:
    for tool in ("wrk", "nginx", "curl", *(t for t in opts.targets if t in KINDS)):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run bash bench/setup.sh")
    if opts.profile_s is not None:
        await profile(opts.profile_s, opts.code)
        return
    # Inherited by the daemon: the idle connections need one descriptor each there and here.
    wanted = IDLE_CONNECTIONS + 2 * WEBSOCKETS + 1000
    if raise_nofile(wanted) < wanted and "idle" in opts.parts:
        raise SystemExit(f"RLIMIT_NOFILE cannot be raised to {wanted}: raise the hard limit")
    started, others = time.monotonic(), OtherLoad()
    cells: Cells | None = None
    stream_results: dict[tuple[str, str], Stream] | None = None
    held_ws: dict[str, HeldWebSockets] | None = None
    held_idle: HeldConnections | None = None
    with tempfile.TemporaryDirectory(prefix="pxproxy-bench-proxy-") as tmp_name:
        tmp = Path(tmp_name)
        workers2 = W2 in opts.targets and "rps" in opts.parts
        async with (
            stack(fast=True, code=opts.code, workers2=workers2) as s,
            contextlib.AsyncExitStack() as es,
        ):
            assert s.fast is not None
            assert s.fast_pid is not None
            upstreams = [
                Upstream(
                    "guest",
                    f"lab guest (aiohttp in `pxproxy lab`, {GUEST_IP}:{GUEST_PORT})",
                    HOST,
                    s.direct,
                    s.lab_pid,
                ),
                Upstream(
                    "fast",
                    f"fast upstream (nginx return 200, 1 worker, {GUEST_IP}:{FAST_PORT})",
                    FAST_HOST,
                    s.fast,
                    s.fast_pid,
                ),
            ]
            routes = {HOST: f"{GUEST_IP}:{GUEST_PORT}", FAST_HOST: f"{GUEST_IP}:{FAST_PORT}"}
            targets: list[Target] = []
            for name in opts.targets:
                if name == "direct":
                    targets.append(Target(name, None, ()))
                elif name == "nginx":
                    targets.append(Target(name, s.nginx, (s.nginx_pids[0],)))
                elif name == "pxproxy":
                    targets.append(Target(name, s.pxproxy, (s.pxproxy_pid,)))
                elif name == W2:
                    if s.pxproxy_w2 is not None:  # only started for the rps part
                        targets.append(Target(name, s.pxproxy_w2, tuple(s.pxproxy_w2_pids)))
                else:
                    proxy = await es.enter_async_context(
                        routed_proxy(KINDS[name], routes, tmp / name)
                    )
                    targets.append(Target(name, proxy.url, (proxy.pid,)))
            one_process = [t for t in targets if t.name != W2]
            skipped = (
                f"{label(W2)} ({W2}): small responses only; not in" if W2 in opts.targets else ""
            )
            for target in targets:
                for upstream in upstreams:
                    await _until_ok(target.url_for(upstream), upstream.host)
            if FAST_BIG_BYTES != BIG:
                raise RuntimeError("the fast upstream's /big is not BIG bytes")
            if "rps" in opts.parts:
                cells = await small_responses(targets, upstreams, opts)
                print_small(cells, targets, upstreams, opts)
            if "stream" in opts.parts:
                stream_results = await streams(one_process, upstreams, opts)
                print_streams(stream_results, one_process, upstreams)
                if skipped:
                    print(f"  ({skipped} the 1 GiB bodies)")
            if "websockets" in opts.parts:
                held_ws = {}
                for target in targets:
                    if target.name in ("pxproxy", "nginx") and target.url and target.pid:
                        held_ws[target.name] = await hold_websockets(
                            target.url + "/ws", HOST, target.pid, WEBSOCKETS, opts.hold_s
                        )
                print_websockets(held_ws, opts.hold_s)
                if skipped:
                    print(f"  ({skipped} the WebSockets)")
            if "idle" in opts.parts and "pxproxy" in opts.targets:
                # The daemon inherited our limit; raise it there too if it started lower.
                limit = raise_nofile(IDLE_CONNECTIONS + 1000, s.pxproxy_pid)
                port = int(s.pxproxy.rsplit(":", 1)[1])
                held_idle = await hold_connections(
                    "127.0.0.1", port, HOST, s.pxproxy_pid, IDLE_CONNECTIONS, opts.hold_s
                )
                print_idle(held_idle, opts.hold_s, limit)
                if skipped:
                    print(f"  ({skipped} the idle connections)")
            print_goals(cells, stream_results, held_ws, held_idle, upstreams)
    print(
        f"\n(run took {time.monotonic() - started:.0f} s; other processes on the machine used "
        f"{others.cores():.2f} of {os.cpu_count()} cores meanwhile)"
    )


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
