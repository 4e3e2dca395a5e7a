"""Cold start: 1,000 running guests behind a Proxmox stand-in that takes 20 ms per request.
Wall time of the first full poll (resources, node pool, every guest's addresses) divided by
the ideal 1,000 x 20 ms / concurrency. Target: <= 1.5.

    python -m bench.bench_cold_start
"""

from __future__ import annotations

import asyncio
import time

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory

from ._util import cluster, fake_cluster, row

GUESTS = 1000
LATENCY_S = 0.020


async def cold_start(url: str, concurrency: int) -> tuple[float, int]:
    cfg = cluster(url, resolve_concurrency=concurrency)
    inventory = Inventory()
    poller, client = make_poller("bench", cfg, inventory, Config(proxmox=(cfg,)), None)
    try:
        t0 = time.perf_counter()
        snap = await poller.poll_once()
        elapsed = time.perf_counter() - t0
    finally:
        await client.close()
    return elapsed, sum(1 for g in snap.guests if g.ips)


async def main() -> None:
    print(f"cold start, {GUESTS} running guests, {LATENCY_S * 1e3:.0f} ms per API request")
    async with fake_cluster(GUESTS, LATENCY_S, running=1.0) as url:
        for concurrency in (8, 32):
            elapsed, resolved = await cold_start(url, concurrency)
            ideal = GUESTS * LATENCY_S / concurrency
            assert resolved == GUESTS, resolved
            row(f"concurrency {concurrency}: wall time", f"{elapsed:.2f} s")
            row(f"concurrency {concurrency}: ideal 1000 x 20 ms / {concurrency}", f"{ideal:.2f} s")
            row(f"concurrency {concurrency}: ratio", f"{elapsed / ideal:.2f}", "target <= 1.5")


if __name__ == "__main__":
    asyncio.run(main())
