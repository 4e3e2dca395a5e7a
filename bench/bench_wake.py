"""Wake overhead: from the moment a sleeping guest's port accepts connections to the first
byte of the proxied response, p50 and p99 over 50 wakes. Goal: p50 <= 50 ms.

The lab and the daemon share one process (and clock) so both instants are read from the same
`time.time()`: the lab stamps the guest's history when its listeners open.

    python3 -m bench.bench_wake
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import aiohttp

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster
from pxproxy.wake.contract import WakeState

from ._util import row

WAKES = 50
VMID = 100


async def _ticks() -> AsyncIterator[None]:
    while True:
        yield
        await asyncio.sleep(0.02)


async def main() -> None:
    cluster = LabCluster(cluster_name=None)
    cluster.add_node("pve1")
    cluster.add_guest(VMID, "lxc", "sleepy", "pve1", boot_time_s=0.2, static_ip=True)
    lab = LabServer(cluster, port=0)
    await lab.start()
    config = Config.model_validate(
        {
            "proxmox": [lab.proxmox_entry(poll_interval="200ms")],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "routes": [
                {"host": "sleepy.bench", "guest": VMID, "port": 8080, "idle": {"timeout": "300ms"}}
            ],
            "log_level": "warning",
        }
    )
    daemon = Daemon(config)
    await daemon.start()
    overheads: list[float] = []
    try:
        assert daemon.wake is not None
        gate = daemon.wake.gate_for(0)
        async with aiohttp.ClientSession() as session:
            for _ in range(WAKES):
                async with session.get(
                    f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": "sleepy.bench"}
                ) as resp:
                    await resp.content.readany()
                    first_byte = time.time()
                    assert resp.status == 200
                opened = max(t for t, state in cluster.guests[VMID].history if state == "running")
                overheads.append(first_byte - opened)
                # Idle-watch puts it back to sleep (shutdown after 300 ms without traffic).
                async with asyncio.timeout(20):
                    async for _ in _ticks():
                        if gate.state is WakeState.ASLEEP:
                            break
    finally:
        await daemon.stop()
        await lab.stop()
    overheads.sort()
    p50 = statistics.median(overheads)
    p99 = overheads[min(len(overheads) - 1, round(0.99 * (len(overheads) - 1)))]
    print(f"wake overhead over {WAKES} wakes (port accepting -> first proxied byte)")
    row("p50", f"{p50 * 1e3:.1f} ms", "goal <= 50 ms")
    row("p99", f"{p99 * 1e3:.1f} ms")
    row("min / max", f"{overheads[0] * 1e3:.1f} / {overheads[-1] * 1e3:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
