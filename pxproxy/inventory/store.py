"""The one place the current snapshot lives. Pollers publish; everyone else reads."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .snapshot import EMPTY, ClusterSnapshot, Snapshot


class Inventory:
    def __init__(self) -> None:
        self._snapshot = EMPTY
        self._clusters: dict[str, ClusterSnapshot] = {}
        self._published = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        """The latest snapshot; hold on to it for a consistent view."""
        return self._snapshot

    def publish(self, cluster: ClusterSnapshot) -> None:
        self._clusters[cluster.name] = cluster
        # Swapping the reference is the only synchronisation readers need.
        self._snapshot = Snapshot(self._clusters)
        # Wake current waiters; later ones wait on a fresh event.
        self._published.set()
        self._published = asyncio.Event()

    async def wait_until(self, predicate: Callable[[Snapshot], bool], timeout_s: float) -> Snapshot:
        """The first snapshot (current or future) satisfying predicate, within timeout_s."""
        async with asyncio.timeout(timeout_s):
            while not predicate(self._snapshot):
                await self._published.wait()
        return self._snapshot
