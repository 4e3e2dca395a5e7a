"""Where a route's traffic goes right now, read from the live snapshot at request time.

Nothing is cached across snapshots, so a guest that DHCP moved to a new address is followed on
the next request without a reload.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ..config.models import RouteConfig
from ..inventory.snapshot import Snapshot
from ..inventory.store import Inventory


class UpstreamError(Exception):
    """The route's guest cannot be reached; `str()` is the client-facing explanation."""

    def __init__(self, guest: str, message: str) -> None:
        super().__init__(message)
        self.guest = guest


class GuestUnknown(UpstreamError):
    pass


class GuestAmbiguous(UpstreamError):
    pass


class NoAddress(UpstreamError):
    pass


class Upstream(NamedTuple):
    guest: str  # the guest's unambiguous ref, cluster:vmid
    name: str
    host: str  # as it goes into a URL: IPv6 bracketed
    port: int
    scheme: str

    @property
    def address(self) -> str:
        """The host to connect to: IPv6 without brackets."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def resolve(snapshot: Snapshot, route: RouteConfig) -> Upstream:
    guests = snapshot.lookup_ref(route.guest).guests
    if not guests:
        raise GuestUnknown(route.guest, f"guest {route.guest!r} is not in the inventory")
    if len(guests) > 1:
        refs = ", ".join(g.ref for g in guests)
        raise GuestAmbiguous(
            route.guest, f"guest {route.guest!r} is ambiguous ({refs}); use cluster:vmid"
        )
    guest = guests[0]
    if not guest.ips:
        raise NoAddress(
            guest.ref,
            f"guest {route.guest!r} ({guest.ref}, {guest.status}) has no IP address yet",
        )
    ip = guest.ips[0]
    host = f"[{ip}]" if ":" in ip else ip
    return Upstream(guest.ref, guest.name, host, route.port, route.scheme)


class UpstreamCache:
    """Resolutions for one snapshot object: a new snapshot (a poll) starts a fresh cache, so
    IP changes are still seen at once, while the hot path skips the lookup. Failures are not
    cached (rare, and re-raising one exception object would grow its traceback)."""

    __slots__ = ("_by_route", "_snapshot")

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None
        self._by_route: dict[tuple[str, int, str], Upstream] = {}

    def get(self, snapshot: Snapshot, route: RouteConfig) -> Upstream:
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._by_route = {}
        # Keyed by what the upstream depends on, so a reloaded route set needs no flush.
        key = (route.guest, route.port, route.scheme)
        found = self._by_route.get(key)
        if found is None:
            found = self._by_route[key] = resolve(snapshot, route)
        return found


class Upstreams(Protocol):
    """Where the HTTP proxy finds a route's upstream: the live snapshot in the daemon, the
    daemon's last word in a worker (proxy/worker.py)."""

    def get(self, route: RouteConfig) -> Upstream:
        """The upstream, or UpstreamError."""


class SnapshotUpstreams:
    """Upstreams read from the inventory's current snapshot (cached per snapshot)."""

    __slots__ = ("_cache", "_inventory")

    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory
        self._cache = UpstreamCache()

    def get(self, route: RouteConfig) -> Upstream:
        return self._cache.get(self._inventory.snapshot, route)
