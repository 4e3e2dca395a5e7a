"""500 concurrent `/stats/<vmid>` streams of one lab guest for ~10 s: upstream `status/current`
calls per second (target 1, thanks to the StatsHub fan-out) and the server's RSS per stream.

The server side (the lab and the management API with its StatsHub) runs in a subprocess started
from this file (`--serve`), so the clients' memory and CPU are not counted; RSS is that
process's before and after opening the streams (the lab inside it costs the same either way).

    python3 -m bench.bench_stats
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from ._util import row, rss_bytes

STREAMS = 500
WINDOW_S = 10.0
VMID = 7321  # an unusual vmid: its loopback address is unlikely to be taken
TOKEN = "bench-stats-token-0123456789"


# ------------------------------------------------------------------ the server (subprocess)


async def serve() -> None:
    from pxproxy.api.app import build_app, make_context
    from pxproxy.api.handlers.stats import STATS_HUB, setup_stats
    from pxproxy.config.models import Config
    from pxproxy.daemon import make_poller
    from pxproxy.inventory.store import Inventory
    from pxproxy.lab.server import LabServer
    from pxproxy.lab.state import LabCluster
    from pxproxy.metrics import Metrics

    cluster = LabCluster()
    cluster.add_node("pve1")
    cluster.add_guest(VMID, "lxc", "bench", "pve1", status="running", static_ip=True)
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
    port = runner.addresses[0][1]
    print(f"READY {port}", flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            if line.strip() == b"count":
                figures = {
                    "calls": lab.api.count("/status/current"),
                    "watchers": app[STATS_HUB].watchers,
                }
                print(json.dumps(figures), flush=True)
    finally:
        await runner.cleanup()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        await client.close()
        await lab.stop()


# ------------------------------------------------------------------ the clients (this process)


class Server:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"

    async def figures(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"count\n")
        await self.proc.stdin.drain()
        data = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        return {str(k): int(v) for k, v in data.items()}


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[Server]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_stats",
        "--serve",
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


async def main() -> None:
    async with server() as s:
        rss_before = rss_bytes(s.proc.pid)
        lines = [0] * STREAMS
        opened = asyncio.Event()
        ready = 0
        stop = asyncio.Event()
        failures: list[str] = []
        connector = aiohttp.TCPConnector(limit=0)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(connector=connector) as session:

            async def stream(i: int) -> None:
                nonlocal ready
                async with session.get(f"{s.url}/stats/{VMID}", headers=headers) as resp:
                    if resp.status != 200:
                        failures.append(f"HTTP {resp.status}: {await resp.text()}")
                        opened.set()  # stop waiting: the run is void
                        return
                    await resp.content.readline()
                    ready += 1
                    if ready == STREAMS:
                        opened.set()
                    while not stop.is_set():
                        if not await resp.content.readline():
                            return
                        lines[i] += 1

            tasks = [asyncio.create_task(stream(i)) for i in range(STREAMS)]
            try:
                await asyncio.wait_for(opened.wait(), 60)
                if failures:
                    raise RuntimeError(f"{len(failures)} streams failed, first: {failures[0]}")
                start = await s.figures()
                t0 = time.monotonic()
                counted_from = sum(lines)
                await asyncio.sleep(WINDOW_S)  # the measured window: streams flow meanwhile
                end = await s.figures()
                elapsed = time.monotonic() - t0
                received = sum(lines) - counted_from
                rss_held = rss_bytes(s.proc.pid)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(300):  # up to 30 s for the server to see every client leave
            left = (await s.figures())["watchers"]
            if not left:
                break
            await asyncio.sleep(0.1)
    calls_per_s = (end["calls"] - start["calls"]) / elapsed
    print(f"{STREAMS} concurrent /stats/{VMID} streams of one lab guest, {elapsed:.1f} s window")
    print("  (server = lab + API + StatsHub in one subprocess; clients in this process)")
    row("upstream status/current calls per second", f"{calls_per_s:.2f}", "target 1")
    row("lines received per stream per second", f"{received / STREAMS / elapsed:.2f}", "1")
    row("streams open during the window", f"{end['watchers']}/{STREAMS}")
    row("watchers left after the clients closed", f"{left}", "0")
    row("server RSS before", f"{rss_before / 2**20:.1f} MiB")
    row(f"server RSS with {STREAMS} streams", f"{rss_held / 2**20:.1f} MiB")
    row("per stream", f"{(rss_held - rss_before) / STREAMS / 1024:.1f} KiB")


if __name__ == "__main__":
    if "--serve" in sys.argv:
        asyncio.run(serve())
    else:
        asyncio.run(main())
