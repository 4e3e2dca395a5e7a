"""Shared bits of the benchmarks: starting the fake cluster as a subprocess, RSS, configs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

from pxproxy.config.models import ClusterConfig


@contextlib.asynccontextmanager
async def fake_cluster(
    guests: int, latency_s: float = 0.0, running: float = 0.7
) -> AsyncIterator[str]:
    """Run bench.fake_cluster in its own process (its CPU must not share our loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fake_cluster",
        "--guests",
        str(guests),
        "--latency",
        str(latency_s),
        "--running",
        str(running),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            raise RuntimeError(f"fake cluster did not start: {line!r}")
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.terminate()
        await proc.wait()


def cluster(url: str, **overrides: object) -> ClusterConfig:
    data: dict[str, object] = {"url": url, "token_id": "bench@pve!b", "secret": "x"}
    data.update(overrides)
    return ClusterConfig.model_validate(data)


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def row(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<58} {value:>14}  {target}")
