"""What publishes onto the hub: the inventory's publishes, idle-watch's news and route-set
changes. Each producer hooks a callback the daemon already runs, so the events come from the
polls pxproxy makes anyway: any number of readers costs no Proxmox call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..inventory.snapshot import ClusterSnapshot, Snapshot
from ..inventory.store import Inventory
from ..routing.route_set import RouteSet, RouteStore
from ..wake.contract import WakeProgress
from ..wake.news import IdleEvent, WakeNews
from ..wake.waker import resolve_guest
from .hub import Event, EventHub
from .inventory_diff import cluster_events

Clock = Callable[[], float]


class InventoryEvents:
    """`poll`, `stats` and `guests` after each publish of a cluster (Inventory.on_publish)."""

    def __init__(self, hub: EventHub, clock: Clock = time.time) -> None:
        self._hub = hub
        self._clock = clock

    def __call__(self, before: ClusterSnapshot | None, after: ClusterSnapshot) -> None:
        if not self._hub.subscribers:
            return  # nobody reads: no diff, no JSON
        for event in cluster_events(before, after, self._clock()):
            self._hub.publish(event)


class WakeEvents:
    """`wake` and `idle` from idle-watch (a `wake.news.WakeListener`). The guest is named
    cluster:vmid, as the snapshot resolves the route's ref, for the readers' allowlists."""

    def __init__(
        self, hub: EventHub, snapshot: Callable[[], Snapshot], clock: Clock = time.time
    ) -> None:
        self._hub = hub
        self._snapshot = snapshot
        self._clock = clock

    def _guest(self, ref: str) -> str:
        found = resolve_guest(self._snapshot(), ref)
        # Not found (or ambiguous): the ref as configured; only `*` tokens are sent it.
        return ref if isinstance(found, str) else found.ref

    def wake_changed(self, ref: str, routes: Sequence[str], progress: WakeProgress) -> None:
        guest, at = self._guest(ref), self._clock()
        data = {
            "guest": guest,
            "routes": list(routes),
            "state": progress.state.value,
            "step": progress.step,
            "error": progress.error,
            "at": at,
        }
        self._hub.publish(Event("wake", data, guest=guest, at=at))

    def idle_event(self, ref: str, event: IdleEvent, detail: str | None) -> None:
        guest, at = self._guest(ref), self._clock()
        data = {"guest": guest, "event": event, "detail": detail, "at": at}
        self._hub.publish(Event("idle", data, guest=guest, at=at))


class RouteEvents:
    """`routes` when the route set changed: readers fetch GET /api/v1/routes again."""

    def __init__(self, hub: EventHub, clock: Clock = time.time) -> None:
        self._hub = hub
        self._clock = clock

    def __call__(self, _: RouteSet) -> None:
        at = self._clock()
        self._hub.publish(Event("routes", {"at": at}, at=at))


def connect(hub: EventHub, inventory: Inventory, news: WakeNews, routes: RouteStore) -> None:
    """Hook every producer up to its source, for the daemon's lifetime."""
    inventory.on_publish(InventoryEvents(hub))
    news.listen(WakeEvents(hub, lambda: inventory.snapshot))
    routes.on_change(RouteEvents(hub))
