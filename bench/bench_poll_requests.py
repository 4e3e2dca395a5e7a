"""API requests per steady-state poll cycle, 1,000 guests: pxproxy's incremental resolution vs
resolving every guest every cycle (what a naive poller does). Target: 1 request per cycle plus
the amortised refresh (<= 5 % of guests).

Simulated time: a clock advances one poll interval (3 s) per cycle, so 200 cycles cover 10
minutes, two IP refresh periods.

    python -m bench.bench_poll_requests
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory

from ._util import cluster, row
from .fake_cluster import FakeCluster

GUESTS = 1000
INTERVAL_S = 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def requests_per_cycle(url: str, fake: FakeCluster, refresh: str, cycles: int) -> float:
    cfg = cluster(url, ip_refresh=refresh)
    clock = Clock()
    poller, client = make_poller("bench", cfg, Inventory(), Config(proxmox=(cfg,)), None, clock)
    try:
        await poller.poll_once()  # cold start, not part of the steady state
        fake.counts.clear()
        for _ in range(cycles):
            clock.now += INTERVAL_S
            await poller.poll_once()
    finally:
        await client.close()
    return sum(fake.counts.values()) / cycles


async def main() -> None:
    fake = FakeCluster(GUESTS, 0.0)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        ours = await requests_per_cycle(url, fake, "300s", 200)
        naive = await requests_per_cycle(url, fake, "0s", 10)
    finally:
        await runner.cleanup()
    print(f"poll requests per steady-state cycle, {GUESTS} guests, {INTERVAL_S:g}s interval")
    row("pxproxy (incremental, refresh 300s)", f"{ours:.2f}", "target <= 1 + 5% of guests")
    row("resolve every guest every cycle", f"{naive:.2f}")
    row("ratio naive / pxproxy", f"{naive / ours:.1f}x")
    row("amortised refresh share of guests per cycle", f"{(ours - 1) / GUESTS:.2%}")


if __name__ == "__main__":
    asyncio.run(main())
