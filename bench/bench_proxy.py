"""The reverse proxy against nginx, to the same lab guest, side by side:

- small responses, keep-alive: requests/s through pxproxy ÷ through nginx (goal >= 0.5), and the
  p50/p99 latency each adds over a direct connection to the guest (wrk --latency);
- a 1 GiB streamed body: throughput through pxproxy ÷ through nginx (goal >= 0.8).

nginx runs with one worker per core and `proxy_buffering off` (streaming, like pxproxy).
Needs wrk, nginx and curl: `bash bench/setup.sh`.

    python3 -m bench.bench_proxy
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass

from ._stack import HOST, stack
from ._util import row

SECONDS = 5
CONNECTIONS = 64
BIG = 1024**3


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    """wrk's "1.23ms" / "850.00us" / "1.02s" in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise RuntimeError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


async def wrk(url: str, host: str | None = None) -> WrkResult:
    args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", url]
    if host:
        args[1:1] = ["-H", f"Host: {host}"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    # The latency distribution lines start the line ("     50%    1.23ms"); a "+/- Stdev"
    # column like "81.99%" elsewhere must not match.
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99) or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {url} failed:\n{out}")
    return WrkResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)))


async def download_s(url: str, host: str | None = None) -> float:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url]
    if host:
        args[1:1] = ["-H", f"Host: {host}"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    seconds, size = (await proc.communicate())[0].decode().split()
    if int(size) != BIG:
        raise RuntimeError(f"{url}: got {size} bytes, expected {BIG}")
    return float(seconds)


async def main() -> None:
    for tool in ("wrk", "nginx", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run bash bench/setup.sh")
    async with stack() as s:
        best: dict[str, WrkResult] = {}
        for _ in range(2):  # alternate, keep each one's best round
            for name, url, host in (
                ("direct", s.direct + "/", None),
                ("nginx", s.nginx + "/", None),
                ("pxproxy", s.pxproxy + "/", HOST),
            ):
                result = await wrk(url, host)
                if name not in best or result.rps > best[name].rps:
                    best[name] = result
        streams: dict[str, float] = {}
        big = f"/big?bytes={BIG}"
        for name, url, host in (
            ("direct", s.direct + big, None),
            ("nginx", s.nginx + big, None),
            ("pxproxy", s.pxproxy + big, HOST),
        ):
            streams[name] = await download_s(url, host)
    d, n, p = best["direct"], best["nginx"], best["pxproxy"]
    print(f"small responses, keep-alive, wrk {CONNECTIONS} connections, {SECONDS}s x 2 rounds")
    for name, r in best.items():
        row(f"{name}: req/s, p50, p99", f"{r.rps:,.0f}  {r.p50_ms:.2f}/{r.p99_ms:.2f} ms")
    row("ratio pxproxy / nginx (req/s)", f"{p.rps / n.rps:.2f}", "goal >= 0.5")
    row(
        "added p50 over direct: nginx, pxproxy",
        f"{n.p50_ms - d.p50_ms:.2f} / {p.p50_ms - d.p50_ms:.2f} ms",
    )
    row(
        "added p99 over direct: nginx, pxproxy",
        f"{n.p99_ms - d.p99_ms:.2f} / {p.p99_ms - d.p99_ms:.2f} ms",
    )
    print("1 GiB streamed body (curl)")
    for name, seconds in streams.items():
        row(f"{name}: throughput", f"{BIG / seconds / 2**20:,.0f} MiB/s")
    row(
        "ratio pxproxy / nginx (throughput)",
        f"{streams['nginx'] / streams['pxproxy']:.2f}",
        "goal >= 0.8",
    )


if __name__ == "__main__":
    asyncio.run(main())
