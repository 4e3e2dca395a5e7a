"""From two snapshots of one cluster to the events of the stream: `poll`, `stats`, `guests`.

Pure functions over immutable snapshots, so they are tested with hand-built ones. A guest
counts as changed when anything but its counters changed (status, addresses, name, tags,
node, lock...): cpu, memory, uptime, disk and network counters move every poll and go out
as `stats` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..inventory.model import Guest
from ..inventory.snapshot import ClusterSnapshot
from .hub import Event

# Fields that change every poll on a running guest: never a `guests` change on their own.
COUNTERS = frozenset({"cpu", "mem", "uptime", "disk", "netin", "netout", "diskread", "diskwrite"})
_STABLE = tuple(i for i, name in enumerate(Guest._fields) if name not in COUNTERS)


def _stable(guest: Guest) -> tuple[object, ...]:
    return tuple(guest[i] for i in _STABLE)


@dataclass(frozen=True, slots=True)
class GuestChanges:
    changed: tuple[Guest, ...]  # new or changed guests, as they are now
    removed: tuple[str, ...]  # refs (cluster:vmid) of guests gone

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


NO_CHANGES = GuestChanges((), ())


def guest_changes(before: ClusterSnapshot | None, after: ClusterSnapshot) -> GuestChanges:
    """What a dashboard holding `before` must learn to show `after`. The first snapshot of a
    cluster (`before` None) has every guest as changed."""
    if before is None:
        return GuestChanges(after.guests, ())
    if after.guests is before.guests:
        return NO_CHANGES  # a failed or held poll: the same data, marked stale
    old = before.by_vmid
    changed = tuple(
        g
        for g in after.guests
        if (was := old.get(g.vmid)) is None or (was is not g and _stable(was) != _stable(g))
    )
    new = after.by_vmid
    removed = tuple(f"{before.name}:{vmid}" for vmid in old if vmid not in new)
    return GuestChanges(changed, removed)


def poll_event(cluster: ClusterSnapshot, at: float) -> Event:
    data = {
        "cluster": cluster.name,
        "ok": cluster.ok,
        "state": cluster.state,
        "error": cluster.error,
        "guests": len(cluster.guests),
        "nodes": len(cluster.nodes),
        "at": at,
    }
    return Event("poll", data, at=at)


def stats_event(cluster: ClusterSnapshot, at: float) -> Event:
    """cpu and memory of the running guests, for sparklines."""
    guests = {
        g.ref: {"cpu": g.cpu, "mem": g.mem, "maxmem": g.maxmem}
        for g in cluster.guests
        if g.status == "running"
    }
    return Event("stats", {"cluster": cluster.name, "at": at, "guests": guests}, at=at)


def guests_event(cluster: str, changes: GuestChanges, at: float) -> Event:
    """`changed` holds each guest exactly as GET /api/v1/guests shows it (Guest.to_json)."""
    data: dict[str, Any] = {
        "cluster": cluster,
        "changed": [g.to_json() for g in changes.changed],
        "removed": list(changes.removed),
        "at": at,
    }
    return Event("guests", data, at=at)


def cluster_events(
    before: ClusterSnapshot | None, after: ClusterSnapshot, at: float
) -> list[Event]:
    """The events of one publish: `poll`; `stats` when the data is fresh (a failed or held
    poll has only the old figures, which would draw a flat line); `guests` when some changed."""
    events = [poll_event(after, at)]
    if after.ok:
        events.append(stats_event(after, at))
    changes = guest_changes(before, after)
    if changes:
        events.append(guests_event(after.name, changes, at))
    return events
