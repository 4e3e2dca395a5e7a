"""Oversized request heads and API slowloris against a running daemon (`pxproxy lab` + `pxproxy
run`, each in its own process; all on loopback).

    python3 -m bench.bench_head_attack [--code DIR] [--slowloris-seconds 60]

Heads: 300 unauthenticated connections each send a request with 127 header lines (16,000 bytes
each to the proxy; 8,000 to the API, whose per-line limit is 8,190) and hold the connection; the
daemon's RSS (VmRSS) is sampled before, at its peak while they are held, and 3 s after every
connection closed. Slowloris: 300 connections to the API each send a partial head and then one
more header byte a second; printed: how many are still open over time.

`--code DIR` runs the daemon from another checkout (e.g. `git worktree add /tmp/base HEAD`) to
measure the code before a change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ._stack import HOST, _wait_ok, free_port, start_daemon, start_lab, stop_all
from ._util import row, rss_bytes

CONNECTIONS = 300
LINES = 127
SOURCES = 8
MIB = 1024 * 1024


@dataclass
class Daemon:
    pid: int
    proxy_port: int
    api_port: int


@contextlib.asynccontextmanager
async def daemon(code: str | None) -> AsyncIterator[Daemon]:
    procs: list[asyncio.subprocess.Process] = []
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code  # and run there: `python -m` puts the cwd first on sys.path
    with tempfile.TemporaryDirectory(prefix="pxproxy-head-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            # Its guest servers' own 400 tracebacks are not ours to read.
            lab = await start_lab(tmp, procs, env=env, cwd=code, quiet=True)
            proxy_port, api_port = free_port(), free_port()
            (tmp / "pxproxy.yml").write_text(
                lab.cluster_yaml()
                + f"listen: {{proxy: '127.0.0.1:{proxy_port}', api: '127.0.0.1:{api_port}'}}\n"
                "api: {tokens: [{name: bench, secret: bench-token-0123456789}]}\n"
                f"routes:\n  - host: {HOST}\n    guest: 100\n    port: 8080\n"
                "log_level: warning\n",
                encoding="utf-8",
            )
            proc = await start_daemon(tmp / "pxproxy.yml", procs, env=env, cwd=code)
            await _wait_ok(f"http://127.0.0.1:{api_port}/health")
            await _wait_ok(f"http://127.0.0.1:{proxy_port}/healthz", {"Host": HOST})
            yield Daemon(proc.pid, proxy_port, api_port)
        finally:
            await stop_all(procs, timeout_s=15)


def source(index: int) -> tuple[str, int]:
    """Connections come from 8 loopback addresses: under the API's 64 per client address, so
    what is measured is the head limit and the header timeout, not the per-client limit."""
    return (f"127.0.1.{index % SOURCES + 1}", 0)


def attack_head(path: str, line_bytes: int) -> bytes:
    lines = b"".join(b"X-Pad-%03d: " % i + b"a" * (line_bytes - 14) + b"\r\n" for i in range(LINES))
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + lines + b"\r\n"
    )


async def _peak_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return peak


async def heads(target: Daemon, port: int, path: str, line_bytes: int) -> None:
    head = attack_head(path, line_bytes)
    before = rss_bytes(target.pid)
    stop = asyncio.Event()
    sampler = asyncio.create_task(_peak_rss(target.pid, stop))
    statuses: dict[str, int] = {}
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    sent = asyncio.Event()
    started = time.monotonic()

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source(index))
        conns.append((reader, writer))
        try:
            writer.write(head)
            await writer.drain()
        except OSError:
            statuses["write failed"] = statuses.get("write failed", 0) + 1

    await asyncio.gather(*(one(i) for i in range(CONNECTIONS)))
    sent.set()
    held = rss_bytes(target.pid)
    await asyncio.sleep(1.0)  # the daemon works through what it was sent
    held = max(held, rss_bytes(target.pid))

    async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 30)
            status = line.split(b" ")[1].decode() if line else "closed"
        except (OSError, TimeoutError, IndexError):
            status = "no answer"
        statuses[status] = statuses.get(status, 0) + 1
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    await asyncio.gather(*(finish(r, w) for r, w in conns))
    elapsed = time.monotonic() - started
    stop.set()
    peak = await sampler
    await asyncio.sleep(3.0)
    after = rss_bytes(target.pid)
    sent_mib = len(head) * CONNECTIONS / MIB
    print(f"{path} on port {port}: {CONNECTIONS} x {len(head) / MIB:.2f} MiB heads")
    row("  RSS before", f"{before / MIB:.1f} MiB")
    row("  RSS peak while sending and held", f"{max(peak, held) / MIB:.1f} MiB")
    row("  RSS 3 s after all closed", f"{after / MIB:.1f} MiB")
    row("  sent in all", f"{sent_mib:.0f} MiB in {elapsed:.1f}s")
    row("  answers", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))


async def slowloris(target: Daemon, seconds: float) -> None:
    open_flags: list[bool] = []

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", target.api_port, local_addr=source(index)
        )
        open_flags.append(True)
        me = len(open_flags) - 1
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            await writer.drain()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    data = await asyncio.wait_for(reader.read(1024), 1.0)
                    if not data:
                        break
                writer.write(b"a")
                await writer.drain()
        except OSError:
            pass
        finally:
            open_flags[me] = False
            writer.close()

    started = time.monotonic()
    tasks = [asyncio.create_task(one(i)) for i in range(CONNECTIONS)]
    marks = [m for m in (1, 5, 9, 11, 15, 20, 25, 30, 40, 50, 60, 80) if m <= seconds]
    print(f"API slowloris: {CONNECTIONS} connections, one header byte a second")
    for mark in marks:
        await asyncio.sleep(max(0.0, started + mark - time.monotonic()))
        row(f"  still open after {mark:>3} s", f"{sum(open_flags)}/{CONNECTIONS}")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", help="run the daemon from this checkout (PYTHONPATH)")
    parser.add_argument("--slowloris-seconds", type=float, default=60.0)
    parser.add_argument("--skip", choices=["heads", "slowloris"])
    args = parser.parse_args()
    # Each on a fresh daemon, so one's RSS does not hide the next's.
    if args.skip != "heads":
        async with daemon(args.code) as target:
            print(f"daemon pid {target.pid}, code {args.code or 'this checkout'}")
            await heads(target, target.proxy_port, "/", 16_000)
        async with daemon(args.code) as target:
            print(f"daemon pid {target.pid}, code {args.code or 'this checkout'}")
            await heads(target, target.api_port, "/api/v1/guests", 8_000)
    if args.skip != "slowloris":
        async with daemon(args.code) as target:
            await slowloris(target, args.slowloris_seconds)


if __name__ == "__main__":
    asyncio.run(main())
