"""Shared bits of the benchmarks: starting the fake cluster as a subprocess, RSS and CPU from
/proc, file-descriptor limits, configs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (nginx's workers), those alive now."""
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids += tree_pids(int(child))
    return pids


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process and its descendants, in clock ticks (os.sysconf
    "SC_CLK_TCK" a second)."""
    return sum(_ticks(each) for each in tree_pids(pid))


def _ticks(pid: int) -> int:
    """utime + stime of one process (0 once it is gone)."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    return 0


def own_ticks() -> int:
    """CPU of this process, its reaped children (wrk, curl) and its live descendants (the
    proxies), in clock ticks."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) + sum(_ticks(p) for p in tree_pids(os.getpid())[1:])


def machine_busy_ticks() -> int:
    """CPU time spent by everything on the machine (all CPUs, steal included), in clock ticks:
    with own_ticks, how much other work ran beside a benchmark."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its descendants, summed (pages they share count once each)."""
    total = 0
    for each in tree_pids(pid):
        with contextlib.suppress(OSError, RuntimeError):
            total += rss_bytes(each)
    return total


def raise_nofile(wanted: int, pid: int | None = None) -> int:
    """Raise RLIMIT_NOFILE's soft limit to `wanted` (at most the hard limit) for this process,
    or for `pid`; returns the soft limit now in force."""
    soft, hard = resource.prlimit(pid or 0, resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.prlimit(pid or 0, resource.RLIMIT_NOFILE, (new, hard))
    return resource.prlimit(pid or 0, resource.RLIMIT_NOFILE)[0]


def row(name: str, value: str, target: str = "") -> None:
    print(f"  {name:<58} {value:>14}  {target}")
