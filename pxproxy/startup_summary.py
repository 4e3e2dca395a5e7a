"""What `pxproxy run` says when it starts: version, config, routes, listeners, and each cluster
once its first poll has answered (polling is asynchronous: the API answers before that)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import __version__
from .config.models import RouteConfig
from .inventory.snapshot import ClusterSnapshot, Snapshot
from .inventory.store import Inventory
from .pve.errors import PveError
from .routing.route_set import route_name
from .shutdown import cancel_and_wait

log = logging.getLogger("pxproxy.startup")

# The summary of a cluster whose first poll never answers is simply never logged; the poller
# warns about the failures. This only bounds each wait of the loop.
_WAIT_S = 3600.0


class VersionSource(Protocol):
    """The part of PveClient the summary uses."""

    async def version(self) -> dict[str, Any]: ...


def route_line(route: RouteConfig) -> str:
    target = f"{route.guest}:{route.port}"
    if route.scheme == "https":
        target = f"https://{target}"
    if route.path_prefix:
        target += f" (path prefix {route.path_prefix})"
    idle = route.idle
    if idle is None:
        return f"route {route_name(route)} -> {target}, always on"
    text = (
        f"route {route_name(route)} -> {target}, idle-watch: {idle.stop_method} after "
        f"{idle.timeout:g}s idle, wake_timeout {idle.wake_timeout:g}s"
    )
    if idle.depends_on:
        text += f", depends on {', '.join(idle.depends_on)}"
    return text


def log_start(
    config_path: Path | None, clusters: Sequence[str], routes: Sequence[RouteConfig]
) -> None:
    log.info(
        "pxproxy %s starting; config %s; clusters: %s",
        __version__,
        config_path if config_path is not None else "(generated)",
        ", ".join(clusters),
        extra={"version": __version__, "config": str(config_path) if config_path else None},
    )
    if not routes:
        log.info("no routes configured: the proxy is off")
    for index, route in enumerate(routes):
        log.info(
            route_line(route),
            extra={
                "route": route_name(route),
                "guest": route.guest,
                "port": route.port,
                "idle_timeout_s": route.idle.timeout if route.idle else None,
                "stop_method": route.idle.stop_method if route.idle else None,
                "wake_timeout_s": route.idle.wake_timeout if route.idle else None,
                "route_index": index,
            },
        )


def log_listeners(api: str | None, proxy: str | None, tcp: Mapping[str, str]) -> None:
    """One line naming every bound listener. `tcp`: route name -> bound address."""
    parts = [f"api {api}"] if api else []
    if proxy:
        parts.append(f"proxy {proxy}")
    parts += [f"{name} on {address}" for name, address in tcp.items()]
    log.info(
        "listening: %s",
        "; ".join(parts) or "nothing",
        extra={"api": api, "proxy": proxy, "tcp": [f"{n}={a}" for n, a in tcp.items()]},
    )


def _answered(cluster: ClusterSnapshot | None) -> bool:
    """Proxmox answered a poll (a degraded answer included), not merely a failure noted."""
    return cluster is not None and (cluster.ok or cluster.degraded)


def cluster_line(cluster: ClusterSnapshot, version: str) -> str:
    nodes = ", ".join(
        n.name if n.status == "online" else f"{n.name} ({n.status})" for n in cluster.nodes
    )
    running = sum(1 for g in cluster.guests if g.status == "running")
    text = (
        f"cluster {cluster.name}: PVE {version}, {len(cluster.nodes)} node"
        f"{'' if len(cluster.nodes) == 1 else 's'} ({nodes or 'none visible'}), "
        f"{len(cluster.guests)} guest{'' if len(cluster.guests) == 1 else 's'} ({running} running)"
    )
    if cluster.degraded:
        text += f"; degraded: {cluster.error}"
    return text


class ClusterSummaries:
    """Logs each cluster's line once its first poll has answered. Owns one task."""

    def __init__(self, inventory: Inventory, clients: Mapping[str, VersionSource]) -> None:
        self._inventory = inventory
        self._clients = dict(clients)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="startup-summary")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        pending = set(self._clients)
        while pending:

            def some_answered(snapshot: Snapshot) -> bool:
                return any(_answered(snapshot.clusters.get(n)) for n in pending)

            with contextlib.suppress(TimeoutError):
                snapshot = await self._inventory.wait_until(some_answered, _WAIT_S)
                for name in sorted(pending):
                    cluster = snapshot.clusters.get(name)
                    if cluster is not None and _answered(cluster):
                        pending.discard(name)
                        await self._log_cluster(cluster)

    async def _log_cluster(self, cluster: ClusterSnapshot) -> None:
        try:
            found = await self._clients[cluster.name].version()
            version = str(found.get("version", "?"))
        except PveError as exc:
            version = f"version unknown ({exc})"
        log.info(
            cluster_line(cluster, version),
            extra={
                "cluster": cluster.name,
                "pve_version": version,
                "nodes": [n.name for n in cluster.nodes],
                "guests": len(cluster.guests),
                "running": sum(1 for g in cluster.guests if g.status == "running"),
            },
        )
