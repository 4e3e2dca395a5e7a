"""The inventory's part of what survives a restart: each guest's name, type and addresses as
last seen, so that a stopped DHCP guest keeps its `last-seen` address across a restart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..state.store import SavedState, SeenGuest, guest_key
from .snapshot import Snapshot


def remembered_addresses(
    saved: Mapping[str, SeenGuest], cluster: str
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """For `IpResolver.remember`: guest id -> (name, addresses) of one cluster's guests."""
    prefix = f"{cluster}:"
    return {
        key[len(prefix) :]: (seen.name, seen.ips)
        for key, seen in saved.items()
        if key.startswith(prefix) and seen.ips
    }


class HasSnapshot(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...


class SeenGuests:
    """A `state.writer.StateSource` over the inventory. Guests of a cluster that has not been
    polled yet keep the records they had; those of a polled cluster are what it shows."""

    def __init__(self, inventory: HasSnapshot, saved: Mapping[str, SeenGuest]) -> None:
        self._inventory = inventory
        self._saved = dict(saved)

    def records(self) -> SavedState:
        snapshot = self._inventory.snapshot
        polled = tuple(f"{name}:" for name in snapshot.clusters)
        guests = {k: v for k, v in self._saved.items() if not k.startswith(polled)}
        for cluster in snapshot.clusters.values():
            for g in cluster.guests:
                if g.template:
                    continue
                key = guest_key(g.cluster, g.id)
                before = self._saved.get(key)
                # An offline node's guests come without a name: keep the one we knew.
                name = g.name or (before.name if before is not None else "")
                guests[key] = SeenGuest(name, g.type, g.ips)
        self._saved = guests
        return SavedState(guests=guests)
