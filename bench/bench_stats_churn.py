"""Connect/disconnect churn of `/stats/<vmid>` streams: does the server's memory level off?

ROUNDS rounds of CYCLES cycles; each cycle opens a stream of one lab guest (text, NDJSON, SSE
and WebSocket in turn, a new TCP connection each), reads its first sample and hangs up. After
each round, once the hub has no watchers left and a gc has run, the server reports its RSS
(/proc/PID/status), Python's live allocated blocks (sys.getallocatedblocks), the sizes of the
StatsHub's structures, the asyncio tasks alive, and its RSS after malloc_trim(0), which gives
freed-but-kept heap pages back: what trim returns is allocator slack, not live objects.

It also reports pymalloc's arenas (1 MiB each; an arena goes back to the OS only once every
block in it is free) and how many objects the cyclic gc freed per cycle (garbage in reference
cycles waits for a collection of its generation, and fills arenas meanwhile).

`--trace` also runs tracemalloc in the server (slower, and RSS then includes its own overhead)
and prints, per round, the allocation sites that grew most since the previous round.

The server (the lab, the management API and its StatsHub, as in bench_stats) runs in a
subprocess started from this file (`--serve`), so the clients' memory is not counted.
`--daemon` churns the real thing instead: `pxproxy run` against `pxproxy lab`, each in its own
process (as bench/_stack.py starts them); only its RSS can be read from outside, and the
concurrency must stay within its `api.max_connections_per_client` (64 by default).

    python3 -m bench.bench_stats_churn [--rounds 4] [--cycles 10000] [--concurrency 32]
                                       [--trace | --daemon]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ._stack import _wait_ok, free_port, start_daemon, start_lab, stop_all
from ._util import row, rss_bytes

ROUNDS = 4
CYCLES = 10_000
CONCURRENCY = 32
ROUND_TIMEOUT_S = 600.0  # a round that takes longer than this is void: stop
VMID = 7331  # an unusual vmid: its loopback address is unlikely to be taken
TOKEN = "bench-stats-churn-token-0123456789"
KINDS = ("text", "ndjson", "sse", "websocket")
TRACE_TOP = 8


# ------------------------------------------------------------------ the server (subprocess)


def _pymalloc_arenas() -> int:
    """pymalloc's arenas in use (sys._debugmallocstats writes to the C stderr: catch it)."""
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        found = re.search(rb"# arenas allocated current\s*=\s*([\d,]+)", out.read())
    return int(found.group(1).replace(b",", b"")) if found else -1


def _malloc_trim() -> bool:
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


async def serve(trace: bool) -> None:
    import tracemalloc

    from pxproxy.api.app import build_app, make_context
    from pxproxy.api.handlers.stats import STATS_HUB, setup_stats
    from pxproxy.config.models import Config
    from pxproxy.daemon import make_poller
    from pxproxy.inventory.store import Inventory
    from pxproxy.lab.server import LabServer
    from pxproxy.lab.state import LabCluster
    from pxproxy.metrics import Metrics

    if trace:
        tracemalloc.start(12)
    # Objects the cyclic gc had to free: garbage in reference cycles lives until a collection
    # of its generation runs, and pymalloc keeps the arenas it filled meanwhile.
    collected = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collected[0] += info["collected"]

    gc.callbacks.append(count)
    cluster = LabCluster()
    cluster.add_node("pve1")
    cluster.add_guest(VMID, "lxc", "churn", "pve1", status="running", static_ip=True)
    lab = LabServer(cluster, host="127.0.0.1", port=0)
    await lab.start()
    config = Config.model_validate(
        {
            "proxmox": [lab.proxmox_entry()],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "bench", "secret": TOKEN, "scopes": ["read"]}]},
        }
    )
    inventory, metrics = Inventory(), Metrics()
    poller, client = make_poller("lab", config.proxmox[0], inventory, config, metrics)
    poll = asyncio.create_task(poller.run(), name="poller")
    await inventory.wait_until(lambda s: any(g.vmid == VMID for g in s.guests), 30)
    app = build_app(
        make_context(config, inventory, metrics, True, clients={"lab": client}), [setup_stats]
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hub = app[STATS_HUB]
    print(f"READY {runner.addresses[0][1]}", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    previous: tracemalloc.Snapshot | None = None
    try:
        while line := await reader.readline():
            command = line.strip().decode()
            figures: dict[str, Any] = {
                "watchers": hub.watchers,
                "feeds": hub.active_feeds,
                "hub_tasks": len(hub._tasks),
                "tasks": len(asyncio.all_tasks()),
            }
            if command == "measure":
                gc.collect()
                figures["collected"], collected[0] = collected[0], 0
                figures["rss"] = rss_bytes()
                figures["blocks"] = sys.getallocatedblocks()
                figures["arenas"] = _pymalloc_arenas()
                figures["trimmed"] = _malloc_trim()
                figures["rss_trimmed"] = rss_bytes()
                if trace:
                    snapshot = tracemalloc.take_snapshot().filter_traces(
                        [tracemalloc.Filter(False, tracemalloc.__file__)]
                    )
                    figures["traced"] = tracemalloc.get_traced_memory()[0]
                    if previous is not None:
                        figures["growth"] = _growth(snapshot, previous)
                    previous = snapshot
            print(json.dumps(figures), flush=True)
    finally:
        await runner.cleanup()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        await client.close()
        await lab.stop()


def _short(filename: str) -> str:
    return filename.rsplit("/site-packages/", 1)[-1].rsplit("/work/main/", 1)[-1]


def _growth(snapshot: Any, previous: Any) -> list[str]:
    """The allocation sites (innermost frame of our own or a library's code) that grew."""
    lines: list[str] = []
    for stat in snapshot.compare_to(previous, "traceback")[:TRACE_TOP]:
        if stat.size_diff <= 0:
            break
        frames = [
            f"{f.filename.rsplit('/site-packages/', 1)[-1]}:{f.lineno}" for f in stat.traceback
        ]
        lines.append(
            f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks at "
            + " <- ".join(reversed(frames[-4:]))
        )
    return lines


# ------------------------------------------------------------------ the clients (this process)


class Server:
    vmid = VMID
    token = TOKEN

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    async def ask(self, command: str = "figures") -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 60))
        return answer


@contextlib.asynccontextmanager
async def server(trace: bool) -> AsyncIterator[Server]:
    args = ["--serve", *(["--trace"] if trace else [])]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_stats_churn",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"server did not start: {line!r}")
        yield Server(proc, int(line.split()[1]))
    finally:
        proc.stdin.close()  # EOF: the server cleans up and exits
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.terminate()
            await proc.wait()


async def one_cycle(
    session: aiohttp.ClientSession, url: str, kind: str, token: str = TOKEN
) -> None:
    """Open one stream, read its first sample, hang up."""
    headers = {"Authorization": f"Bearer {token}"}
    if kind == "websocket":
        async with session.ws_connect(url, headers=headers) as ws:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"websocket: {msg.type!r}")
        return
    if kind == "sse":
        headers["Accept"] = "text/event-stream"
    target = f"{url}?format=json" if kind == "ndjson" else url
    async with session.get(target, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{kind}: HTTP {resp.status}: {await resp.text()}")
        if not await resp.content.readline():
            raise RuntimeError(f"{kind}: the stream ended before its first sample")
        resp.close()  # hang up mid-stream, as a client that goes away does


async def churn(s: Server | Daemon, cycles: int, concurrency: int) -> None:
    url = f"{s.url}/stats/{s.vmid}"
    token = s.token
    kinds = itertools.cycle(KINDS)
    todo = iter(range(cycles))
    # force_close: every cycle is a new TCP connection, as with clients that come and go.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in todo:
                await one_cycle(session, url, next(kinds), token)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass
class Daemon:
    url: str
    token: str
    pid: int
    vmid: int = 100  # bench/_stack.py's scenario


@contextlib.asynccontextmanager
async def daemon() -> AsyncIterator[Daemon]:
    """`pxproxy lab` and `pxproxy run` (its API only matters here), stopped on exit."""
    procs: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="pxproxy-churn-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            lab = await start_lab(tmp, procs)
            proxy_port, api_port = free_port(), free_port()
            (tmp / "pxproxy.yml").write_text(
                lab.cluster_yaml()
                + f"listen: {{proxy: '127.0.0.1:{proxy_port}', api: '127.0.0.1:{api_port}'}}\n"
                f"api: {{tokens: [{{name: bench, secret: {TOKEN}, scopes: [read]}}]}}\n"
                "log_level: warning\n",
                encoding="utf-8",
            )
            run = await start_daemon(tmp / "pxproxy.yml", procs)
            url = f"http://127.0.0.1:{api_port}"
            await _wait_ok(f"{url}/api/v1/guests/100", {"Authorization": f"Bearer {TOKEN}"})
            yield Daemon(url, TOKEN, run.pid)
        finally:
            await stop_all(procs)


async def main_daemon(rounds: int, cycles: int, concurrency: int) -> None:
    """Only RSS is visible from outside: it must stop growing, round after round."""
    mib = 2**20
    async with daemon() as d:
        await churn(d, 200, concurrency)
        # Streams whose client left end at their next sample (within a second or two).
        await asyncio.sleep(3)
        figures = [rss_bytes(d.pid)]
        for _ in range(rounds):
            t0 = time.monotonic()
            await asyncio.wait_for(churn(d, cycles, concurrency), ROUND_TIMEOUT_S)
            rate = cycles / (time.monotonic() - t0)
            await asyncio.sleep(3)
            figures.append(rss_bytes(d.pid))
            print(f"  round {len(figures) - 1}: {figures[-1] / mib:.1f} MiB, {rate:,.0f} cycles/s")
    print(
        f"pxproxy run (its API) against pxproxy lab: {rounds} rounds x {cycles:,} cycles of "
        f"/stats/{d.vmid} ({', '.join(KINDS)} in turn, {concurrency} at a time)"
    )
    row("daemon RSS after warm-up", f"{figures[0] / mib:.1f} MiB")
    for n, (a, b) in enumerate(itertools.pairwise(figures), 1):
        row(f"round {n}: RSS (+ vs previous)", f"{b / mib:.1f} ({(b - a) / mib:+.1f})")
    growth = [b - a for a, b in itertools.pairwise(figures)]
    levels = len(growth) < 2 or growth[-1] <= max(growth[0] / 4, 2 * mib)
    row("verdict", "levels off" if levels else "RSS still growing: run without --daemon")


async def settled(s: Server) -> dict[str, Any]:
    """Wait (up to 30 s) until the server saw every client leave."""
    for _ in range(300):
        figures = await s.ask()
        if not figures["watchers"] and not figures["hub_tasks"]:
            return figures
        await asyncio.sleep(0.1)
    return figures


async def main(rounds: int, cycles: int, concurrency: int, trace: bool) -> None:
    mib = 2**20
    results: list[dict[str, Any]] = []
    async with server(trace) as s:
        await churn(s, 200, concurrency)  # warm-up: imports, first connections, caches filled once
        await settled(s)
        base = await s.ask("measure")
        for _ in range(rounds):
            t0 = time.monotonic()
            await asyncio.wait_for(churn(s, cycles, concurrency), ROUND_TIMEOUT_S)
            elapsed = time.monotonic() - t0
            left = await settled(s)
            figures = await s.ask("measure")
            figures.update(elapsed=elapsed, left=left)
            results.append(figures)
    print(
        f"{rounds} rounds x {cycles:,} connect/read-one-sample/disconnect cycles of "
        f"/stats/{VMID} ({', '.join(KINDS)} in turn, {concurrency} at a time)"
    )
    print("  (server = lab + API + StatsHub in one subprocess; after a gc at the end of a round)")
    if trace:
        print("  (tracemalloc on: RSS includes its overhead)")
    row("RSS after warm-up", f"{base['rss'] / mib:.1f} MiB")
    row("RSS after warm-up, after malloc_trim", f"{base['rss_trimmed'] / mib:.1f} MiB")
    row("live Python blocks after warm-up", f"{base['blocks']:,}")
    row("pymalloc arenas (1 MiB each) after warm-up", f"{base['arenas']}")
    prev_rss, prev_blocks = base["rss"], base["blocks"]
    for n, r in enumerate(results, 1):
        rate = cycles / r["elapsed"]
        row(
            f"round {n}: RSS (+ vs previous), cycles/s",
            f"{r['rss'] / mib:.1f} ({(r['rss'] - prev_rss) / mib:+.1f})",
            f"{rate:,.0f}/s",
        )
        row(f"round {n}: RSS after malloc_trim", f"{r['rss_trimmed'] / mib:.1f} MiB")
        row(
            f"round {n}: live Python blocks (+ vs previous)",
            f"{r['blocks']:,} ({r['blocks'] - prev_blocks:+,})",
        )
        row(f"round {n}: pymalloc arenas", f"{r['arenas']}")
        row(
            f"round {n}: objects freed by the cyclic gc per cycle", f"{r['collected'] / cycles:.1f}"
        )
        left = r["left"]
        row(
            f"round {n}: watchers, feeds, hub tasks, all tasks left",
            f"{left['watchers']}, {left['feeds']}, {left['hub_tasks']}, {left['tasks']}",
        )
        for line in r.get("growth", ()):
            print(f"      {line}")
        prev_rss, prev_blocks = r["rss"], r["blocks"]
    # Verdict: live objects growing with every round is a leak; RSS growth that shrinks round
    # after round while the live blocks stay flat is the allocator keeping its high-water mark.
    blocks_growth = [results[0]["blocks"] - base["blocks"]] + [
        b["blocks"] - a["blocks"] for a, b in itertools.pairwise(results)
    ]
    per_cycle = max(blocks_growth[1:] or blocks_growth) / cycles
    rss_growth = [results[0]["rss"] - base["rss"]] + [
        b["rss"] - a["rss"] for a, b in itertools.pairwise(results)
    ]
    if per_cycle >= 0.5:
        verdict = f"LEAK: {per_cycle:.2f} live Python blocks more per cycle, every round"
    elif len(rss_growth) > 1 and rss_growth[-1] > max(rss_growth[0] / 4, 2 * mib):
        verdict = "RSS still growing with flat live objects: look below Python (C extensions)"
    else:
        verdict = (
            f"levels off: live blocks flat ({per_cycle:.3f} per cycle), RSS growth per round "
            + ", ".join(f"{g / mib:+.1f}" for g in rss_growth)
            + f" MiB; pymalloc arenas {base['arenas']} -> {results[-1]['arenas']}"
            + " (the allocator keeps its high-water mark: not a leak)"
        )
    row("verdict", verdict)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--cycles", type=int, default=CYCLES)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--daemon", action="store_true", help="churn pxproxy run (RSS only)")
    parser.add_argument("--trace", action="store_true", help="tracemalloc growth per round")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.trace))
    elif args.daemon:
        asyncio.run(main_daemon(args.rounds, args.cycles, args.concurrency))
    else:
        asyncio.run(main(args.rounds, args.cycles, args.concurrency, args.trace))
