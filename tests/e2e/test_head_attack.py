"""The attacks of the review, against `pxproxy run` as a subprocess: oversized request heads on
both listeners (431, nothing forwarded, RSS bounded and given back) and slowloris on the API
(closed at the header timeout)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import yaml

from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for
from .daemon_process import running_daemon

pytestmark = pytest.mark.slow

GUEST = 8871
CONNECTIONS = 100
LINES = 127
LINE_BYTES = 16_000
MIB = 1024 * 1024


def write_config(path: Path, lab: LabServer) -> None:
    config = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "api": {"header_timeout": "1s", "max_connections_per_client": 1000},
        "routes": [{"host": "big.test", "guest": f"lab:{GUEST}", "port": 8080}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


HEAD = b"GET / HTTP/1.1\r\nHost: big.test\r\n" + b"".join(
    b"X-Pad-%d: %s\r\n" % (i, b"a" * LINE_BYTES) for i in range(LINES)
)


async def attack(port: int) -> bytes:
    """One connection sending a 1.9 MiB head; the status line it gets back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HEAD)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_oversized_heads_get_431_and_memory_is_bounded(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab_server.cluster.add_guest(GUEST, "lxc", "big", "pve1", status="running")
    await lab_server.cluster.open()
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab_server)
    async with running_daemon(config) as daemon:
        await daemon.wait_listening("api", "proxy")
        pid = daemon.proc.pid
        before = rss(pid)
        peak = before
        for port in (daemon.ports["proxy"], daemon.ports["api"]):
            answers = asyncio.gather(*(attack(port) for _ in range(CONNECTIONS)))
            while not answers.done():
                peak = max(peak, rss(pid))
                await asyncio.wait({answers}, timeout=0.05)
            assert {line.split(b" ", 2)[1] for line in answers.result()} == {b"431"}
        after = rss(pid)
    # Unbounded, each connection held its whole head: 100 x 1.9 MiB per listener.
    assert peak - before < 48 * MIB, f"RSS {before / MIB:.0f} -> peak {peak / MIB:.0f} MiB"
    assert after - before < 32 * MIB, f"RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB"
    assert "aaaaaaaa" not in daemon.text  # not even the padding reaches the log


async def test_api_slowloris_is_closed_at_the_header_timeout(
    lab_server: LabServer, tmp_path: Path
) -> None:
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab_server)
    async with running_daemon(config) as daemon:
        await daemon.wait_listening("api")
        conns = [await asyncio.open_connection("127.0.0.1", daemon.ports["api"]) for _ in range(50)]
        closed = 0

        async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal closed
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(ConnectionError):
                while not reader.at_eof():
                    writer.write(b"X")  # a byte at a time, never the end of the head
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.2)
            closed += 1
            writer.close()

        tasks = [asyncio.create_task(dribble(r, w)) for r, w in conns]
        try:
            # header_timeout is 1s: every one closed well before the 10 s deadline.
            await wait_for(lambda: closed == len(conns), 10, "the slow clients to be closed")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert "no complete request head within 1s" in daemon.text
