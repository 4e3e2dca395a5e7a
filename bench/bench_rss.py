"""Memory: RSS of the daemon with 10,000 guests cached (addresses resolved) minus the RSS of
the same daemon with an empty cluster. Target: <= 100 MB.

    python -m bench.bench_rss
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from ._util import fake_cluster, row, rss_bytes
from .fake_cluster import guest_ip

GUESTS = 10_000


@contextlib.asynccontextmanager
async def daemon(url: str) -> AsyncIterator[tuple[int, int]]:
    """(pid, api port) of `pxproxy run` polling url."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pxproxy.yml"
        config.write_text(
            f"proxmox:\n  - url: {url}\n    token_id: bench@pve!b\n    secret: x\n"
            "    resolve_concurrency: 32\nlisten: {api: '127.0.0.1:0'}\nlog_level: info\n",
            encoding="utf-8",
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pxproxy",
            "run",
            "-c",
            str(config),
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        port = 0
        while not port:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            if not line:
                raise RuntimeError("daemon exited")
            if m := re.search(r"API listening on 127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
        try:
            yield proc.pid, port
        finally:
            proc.terminate()
            await proc.wait()


async def wait_resolved(port: int, ip: str | None) -> None:
    """Until the first full poll is published: /health has a poll age, and `ip` resolves."""
    async with aiohttp.ClientSession() as session:
        for _ in range(1200):
            async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                body = await resp.json()
            ready = body["clusters"][0]["last_poll_age_s"] is not None
            if ready and ip is not None:
                async with session.get(f"http://127.0.0.1:{port}/api/v1/lookup?ip={ip}") as r:
                    ready = r.status == 200
            if ready:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError("daemon never finished its first poll")


async def measure(guests: int) -> int:
    async with fake_cluster(guests) as url, daemon(url) as (pid, port):
        # The last running guest (i % 100 < 70): resolved in the same batch as all the others.
        await wait_resolved(port, guest_ip(100 + guests - 31) if guests else None)
        await asyncio.sleep(2)  # a few more poll cycles, so the steady state is measured
        return rss_bytes(pid)


async def main() -> None:
    empty = await measure(0)
    full = await measure(GUESTS)
    print(f"daemon RSS, {GUESTS} guests cached vs an empty cluster")
    row("empty cluster", f"{empty / 2**20:.1f} MiB")
    row(f"{GUESTS} guests, addresses resolved", f"{full / 2**20:.1f} MiB")
    row("difference", f"{(full - empty) / 2**20:.1f} MiB", "target <= 100 MB")


if __name__ == "__main__":
    asyncio.run(main())
