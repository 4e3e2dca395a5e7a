"""Reverse lookups: in-process lookups per second (target >= 1,000,000/s), and /api/v1/lookup
requests per second through the management API divided by a bare aiohttp handler answering a
guest's JSON on the same machine (target >= 0.8).

The HTTP load comes from wrk (bench/setup.sh installs it) or, without it, from an aiohttp
client in another process. Each server runs in its own process; the two are measured
alternately, twice, and the best round of each is kept.

    python -m bench.bench_lookup
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sys
import time

from aiohttp import web

from pxproxy.config.models import Config
from pxproxy.inventory.ingest import make_nodes, parse_resources
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory

from ._util import row
from .fake_cluster import guest_ip, make_resources

GUESTS = 10_000
LOOKUPS = 1_000_000
HTTP_SECONDS = 5
CONNECTIONS = 32


def snapshot() -> ClusterSnapshot:
    resources = parse_resources(json.dumps({"data": make_resources(GUESTS)}), "home")
    guests = [g._replace(ips=(guest_ip(g.vmid),), ip_source="interfaces") for g in resources.guests]
    return ClusterSnapshot.build("home", guests, make_nodes("home", resources.nodes, {}))


def in_process() -> float:
    inventory = Inventory()
    cs = snapshot()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_publish(inventory, cs))
    snap = inventory.snapshot
    ips = [guest_ip(100 + random.randrange(GUESTS)) for _ in range(1000)]
    queries = ips * (LOOKUPS // len(ips))
    lookup = snap.lookup_ip
    t0 = time.perf_counter()
    for ip in queries:
        lookup(ip)
    elapsed = time.perf_counter() - t0
    loop.close()
    assert lookup(ips[0]).total == 1
    return len(queries) / elapsed


async def _publish(inventory: Inventory, cs: ClusterSnapshot) -> None:
    inventory.publish(cs)


# ------------------------------------------------------------------ servers


def serve(kind: str, port: int) -> None:
    async def run() -> None:
        cs = snapshot()
        if kind == "pxproxy":
            from pxproxy.api.app import build_app, make_context
            from pxproxy.metrics import Metrics

            inventory = Inventory()
            inventory.publish(cs)
            config = Config.model_validate(
                {"proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}]}
            )
            app = build_app(make_context(config, inventory, Metrics(), loopback=True))
        else:
            body = json.dumps({"guest": cs.guests[0].to_json()})

            async def bare(request: web.Request) -> web.Response:
                return web.Response(text=body, content_type="application/json")

            app = web.Application()
            app.router.add_get("/api/v1/lookup", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


async def start_server(kind: str, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_lookup",
        "--serve",
        kind,
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 120)
    return proc


async def load_wrk(url: str) -> float:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{HTTP_SECONDS}s",
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out.decode())
    if not m:
        raise RuntimeError(out.decode())
    return float(m.group(1))


async def load_aiohttp(url: str) -> float:
    code = (
        "import asyncio, aiohttp, time, sys\n"
        "async def main():\n"
        "    n = 0\n"
        "    end = time.perf_counter() + float(sys.argv[2])\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        async def worker():\n"
        "            nonlocal n\n"
        "            while time.perf_counter() < end:\n"
        "                async with s.get(sys.argv[1]) as r:\n"
        "                    await r.read()\n"
        "                n += 1\n"
        f"        await asyncio.gather(*(worker() for _ in range({CONNECTIONS})))\n"
        "    print(n / float(sys.argv[2]))\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, url, str(HTTP_SECONDS), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return float(out.decode().strip())


async def http_ratio() -> tuple[float, float, str]:
    load = load_wrk if shutil.which("wrk") else load_aiohttp
    ip = guest_ip(4242)
    servers = {"pxproxy": 18781, "bare": 18782}
    procs = {k: await start_server(k, p) for k, p in servers.items()}
    best = dict.fromkeys(servers, 0.0)
    try:
        for _ in range(2):
            for kind, port in servers.items():
                rps = await load(f"http://127.0.0.1:{port}/api/v1/lookup?ip={ip}")
                best[kind] = max(best[kind], rps)
    finally:
        for proc in procs.values():
            proc.terminate()
            await proc.wait()
    return best["pxproxy"], best["bare"], "wrk" if load is load_wrk else "aiohttp client"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["pxproxy", "bare"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    per_s = in_process()
    print(f"reverse lookups, {GUESTS} guests")
    row("in-process lookup_ip", f"{per_s:,.0f}/s", "target >= 1,000,000/s")
    ours, bare, tool = asyncio.run(http_ratio())
    row(f"/api/v1/lookup?ip= ({tool}, {CONNECTIONS} connections)", f"{ours:,.0f} req/s")
    row("bare aiohttp handler, same JSON size", f"{bare:,.0f} req/s")
    row("ratio pxproxy / bare", f"{ours / bare:.2f}", "target >= 0.8")


if __name__ == "__main__":
    main()
