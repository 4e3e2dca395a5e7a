"""Runs guest commands for the API: node shells over termproxy (LXC, node) and the QEMU guest
agent's exec (argv, no shell). One instance per API app; it owns the terminal HTTP sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config.models import ClusterConfig
from ..pve.client import PveClient
from ..pve.errors import PveProtocolError
from ..pve.termproxy import (
    KEEPALIVE_S,
    ShellPool,
    ShellTimeoutError,
    ShellUnavailableError,
    Sink,
    StartHook,
    TermproxyConnector,
)
from .guest_commands import shell_line

__all__ = ["ShellRunner", "StreamSettings"]

AGENT_POLL_START_S = 0.05
AGENT_POLL_MAX_S = 1.0


@dataclass(frozen=True, slots=True)
class StreamSettings:
    max_shells: int = 4  # concurrent shells per cluster
    queue_wait_s: float = 10.0  # how long a request waits for a shell slot
    keepalive_s: float = KEEPALIVE_S
    exec_timeout_s: float = 60.0  # default for POST /exec
    snapshot_timeout_s: float = 30.0  # journal/tail without follow


class ShellRunner:
    def __init__(
        self,
        clusters: Mapping[str, ClusterConfig],
        clients: Mapping[str, PveClient],
        settings: StreamSettings = StreamSettings(),
    ) -> None:
        self.settings = settings
        self._clients = dict(clients)
        self._connectors = {
            name: TermproxyConnector(cfg, clients[name], keepalive_s=settings.keepalive_s)
            for name, cfg in clusters.items()
            if name in clients
        }
        self.pools = {
            name: ShellPool(settings.max_shells, wait_s=settings.queue_wait_s)
            for name in self._connectors
        }

    def shells_available(self, cluster: str) -> bool:
        connector = self._connectors.get(cluster)
        return connector is not None and connector.available

    def client(self, cluster: str) -> PveClient:
        client = self._clients.get(cluster)
        if client is None:
            raise PveProtocolError(f"no Proxmox client for cluster {cluster!r}")
        return client

    async def close(self) -> None:
        for connector in self._connectors.values():
            await connector.close()

    async def run_shell(
        self,
        cluster: str,
        node: str,
        argv: Sequence[str],
        sink: Sink,
        *,
        timeout_s: float | None,
        on_start: StartHook | None = None,
    ) -> int:
        """argv in a node shell (quoted here, never elsewhere); returns its exit status."""
        connector = self._connectors.get(cluster)
        if connector is None or not connector.available:
            raise ShellUnavailableError()
        async with self.pools[cluster].slot():
            return await connector.run(
                node, shell_line(argv), sink, timeout_s=timeout_s, on_start=on_start
            )

    async def run_agent(
        self,
        cluster: str,
        node: str,
        vmid: int,
        argv: Sequence[str],
        sink: Sink,
        *,
        timeout_s: float,
    ) -> int:
        """argv through the QEMU guest agent: `agent/exec`, then poll `agent/exec-status`.
        The agent returns the output once the command has exited (no streaming)."""
        client = self.client(cluster)
        started = time.monotonic()
        pid = await client.agent_exec(node, vmid, argv)
        delay = AGENT_POLL_START_S
        while True:
            status = await client.agent_exec_status(node, vmid, pid)
            if status.exited:
                break
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                # The agent cannot kill what it started: say so rather than pretend.
                raise ShellTimeoutError(
                    f"the command did not finish within {timeout_s:g}s "
                    "(the guest agent cannot interrupt it; it may still be running)",
                    path=f"qemu/{vmid}/agent/exec-status",
                )
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, AGENT_POLL_MAX_S)
        for text in (status.out_data, status.err_data):
            if text:
                await sink(text.encode("utf-8", "replace"))
        return status.exit_status


def runner_for(
    names: Sequence[str],
    clusters: Sequence[ClusterConfig],
    clients: Mapping[str, PveClient],
    settings: StreamSettings = StreamSettings(),
) -> ShellRunner:
    return ShellRunner(dict(zip(names, clusters, strict=True)), clients, settings)
