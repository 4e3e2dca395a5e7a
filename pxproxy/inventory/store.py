"""The one place the current snapshot lives. Pollers publish; everyone else reads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .snapshot import EMPTY, ClusterSnapshot, Snapshot

log = logging.getLogger(__name__)

# Told of every publish: (the cluster's snapshot before, or None the first time; the new one).
PublishListener = Callable[[ClusterSnapshot | None, ClusterSnapshot], None]


class Inventory:
    def __init__(self) -> None:
        self._snapshot = EMPTY
        self._clusters: dict[str, ClusterSnapshot] = {}
        self._published = asyncio.Event()
        self._listeners: list[PublishListener] = []

    def on_publish(self, listener: PublishListener) -> None:
        """Called synchronously after every publish, once readers see the new snapshot."""
        self._listeners.append(listener)

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot; hold on to it for a consistent view."""
        return self._snapshot

    def publish(self, cluster: ClusterSnapshot) -> None:
        previous = self._clusters.get(cluster.name)
        self._clusters[cluster.name] = cluster
        # Swapping the reference is the only synchronisation readers need.
        self._snapshot = Snapshot(self._clusters)
        # Wake current waiters; later ones wait on a fresh event.
        self._published.set()
        self._published = asyncio.Event()
        for listener in self._listeners:
            try:
                listener(previous, cluster)
            except Exception:  # a listener's bug must not fail the poll that published
                log.exception("inventory listener failed on cluster %s", cluster.name)

    async def wait_until(self, predicate: Callable[[Snapshot], bool], timeout_s: float) -> Snapshot:
        """The first snapshot (current or future) satisfying predicate, within timeout_s."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self._snapshot):
                await self._published.wait()
        return self._snapshot
