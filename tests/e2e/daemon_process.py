"""`pxproxy run` as a subprocess, as users and systemd run it: its ports read from its log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

_PORTS = {
    "api": re.compile(r"API listening on \S+?:(\d+)"),
    "proxy": re.compile(r"proxy listening on \S+?:(\d+)"),
    "dns": re.compile(r"DNS listening on \S+?:(\d+)"),
}


class DaemonProcess:
    """A running daemon; `log` collects everything it prints, until it exits."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self._drain: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        return "".join(self.log)

    async def wait_listening(self, *which: str, timeout_s: float = 20.0) -> None:
        """Read the log until every listener in `which` printed its port."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while not all(w in self.ports for w in which):
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    pytest.fail("daemon exited early:\n" + self.text)
                self.log.append(line)
                for name, pattern in _PORTS.items():
                    if name not in self.ports and (m := pattern.search(line)):
                        self.ports[name] = int(m.group(1))
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.log.append(line.decode())

    async def finish(self) -> None:
        """Await the exit (the caller signalled it) and the rest of the log."""
        await self.proc.wait()
        if self._drain is not None:
            await self._drain


@contextlib.asynccontextmanager
async def running_daemon(
    config: Path,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> AsyncIterator[DaemonProcess]:
    """`pxproxy run -c config [args...]`, e.g. args ("--log-format", "json"); `prefix`: a
    command that runs it (e.g. in a mount namespace)."""
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "pxproxy",
        "run",
        "-c",
        str(config),
        *args,
        env=dict(os.environ, **(env or {})),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    daemon = DaemonProcess(proc)
    try:
        yield daemon
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await daemon.finish()
