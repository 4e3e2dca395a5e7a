"""The HTTP proxy alone in a process of its own, for tests that need its own limits (a low or
raised RLIMIT_NOFILE) or its own memory figures.

The child (`python -m tests.proxy.proxy_process ROUTE_JSON CONFIG_JSON`) builds an HttpProxy
as tests/proxy/conftest.py does, with one route, on the daemon's event loop (uvloop when
available), logs to stderr as the daemon does, prints `proxy listening on HOST:PORT` on
stdout, and answers `stats` on stdin with a JSON line of its listener's counters. It drains
and exits on SIGTERM.

The parent side is `proxy_process()`: the child started with `nofile` as its soft
RLIMIT_NOFILE, its stderr collected line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
STATS_TIMEOUT_S = 5.0
ROOT = Path(__file__).resolve().parents[2]  # where `tests` is a package to run from


# ---------------------------------------------------------------------------- the child


async def _serve(route: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    from pxproxy.config.models import ProxyConfig, RouteConfig
    from pxproxy.inventory.snapshot import ClusterSnapshot
    from pxproxy.inventory.store import Inventory
    from pxproxy.proxy.http import HttpProxy
    from pxproxy.proxy.routes import RouteTable
    from pxproxy.proxy.upstream import SnapshotUpstreams
    from pxproxy.wake.contract import AlwaysReady

    from ..builders import make_guest

    route_config = RouteConfig.model_validate(route)
    inventory = Inventory()
    guest = make_guest(7210, str(route_config.guest), cluster="lab", ips=(HOST,))
    inventory.publish(ClusterSnapshot.build("lab", [guest], ()))
    always = AlwaysReady()
    proxy = HttpProxy(
        RouteTable((route_config,)),
        SnapshotUpstreams(inventory),
        lambda _: always,
        ProxyConfig.model_validate(config),
    )
    listener = await proxy.listen(HOST, 0)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"proxy listening on {HOST}:{listener.port}", flush=True)

    def stats() -> str:
        return json.dumps(
            {
                "accepted": listener.accepted,
                "starvations": listener.starvations,
                "connections": sum(len(s.connections) for s in proxy._servers),
                "idle_upstreams": proxy.pool.idle_count(),
            }
        )

    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    async def commands() -> None:
        while line := await stdin.readline():
            if line.strip() == b"stats":
                print(stats(), flush=True)

    answering = asyncio.create_task(commands())
    await stop.wait()
    answering.cancel()
    listener.close()
    await proxy.drain(1.0)
    await proxy.close()


def main() -> None:
    from pxproxy.runtime import run, setup_logging

    route, config = (json.loads(arg) for arg in sys.argv[1:3])
    setup_logging("info")
    run(_serve(route, config))


# ---------------------------------------------------------------------------- the parent


@dataclass
class ProxyProcess:
    proc: asyncio.subprocess.Process
    port: int
    log: list[str] = field(default_factory=list)  # stderr, line by line, as it comes

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logged(self, text: str) -> int:
        """Lines of the log that contain `text`."""
        return sum(text in line for line in self.log)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc/PID/status")

    def cpu_s(self) -> float:
        """User and system time the process has used."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(STATS_TIMEOUT_S):
            line = await self.proc.stdout.readline()
        if not line:
            raise AssertionError("the proxy process exited:\n" + "".join(self.log))
        result: dict[str, int] = json.loads(line)
        return result


def _limit_nofile(soft: int | None) -> None:
    if soft is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))


@contextlib.asynccontextmanager
async def proxy_process(
    route: Mapping[str, Any], *, nofile: int | None = None, **config: Any
) -> AsyncIterator[ProxyProcess]:
    """The proxy in a child process with soft RLIMIT_NOFILE `nofile` (None: inherited)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.proxy.proxy_process",
        json.dumps(route),
        json.dumps(config),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: _limit_nofile(nofile),
    )
    log: list[str] = []

    async def collect() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            log.append(line.decode(errors="replace"))

    collecting = asyncio.create_task(collect())
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            first = (await proc.stdout.readline()).decode()
        if not first.startswith("proxy listening on "):
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            await collecting
            raise AssertionError(f"the proxy process did not start: {first!r}\n" + "".join(log))
        port = int(first.rsplit(":", 1)[1])
        yield ProxyProcess(proc, port, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(collecting, STOP_TIMEOUT_S)


if __name__ == "__main__":
    main()


OK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextlib.asynccontextmanager
async def ok_guest(backlog: int = 100) -> AsyncIterator[int]:
    """A guest answering every request with "ok", kept alive; yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(OK_REPLY)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, HOST, 0, backlog=backlog)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
