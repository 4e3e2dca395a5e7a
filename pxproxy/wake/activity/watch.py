"""Activity pxproxy's own proxy never sees, told to idle-watch.

A route's `activity.source` says where it comes from: `proxy` (pxproxy's proxy reports it
itself, through the gate), `traefik` (the route's service in Traefik's Prometheus metrics
grew, or has connections open), `traffic` (the guest's own netin+netout grew by more than
`threshold` bytes between two polls). Either way the route's gate hears `activity()`, which
pushes its idle deadline back; pxproxy's proxy still reports what passes through it too.

A source that cannot be read (Traefik's metrics down, the cluster's poll failing) holds the
guest awake, as an open connection does: idle-watch must never stop a guest someone may be
using only because it could not look. The idle clock starts again once the source reads;
the outage is logged once as a WARNING and shown in the route's reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ...config.companion import ActivitySource, TraefikOptions
from ...config.models import RouteConfig
from ...integrations.names import traefik_service_name
from ...inventory.snapshot import ClusterSnapshot, Snapshot
from ...routing.route_set import RouteSet, route_name
from ...shutdown import cancel_and_wait
from ...state.store import guest_key
from ..contract import Gate
from ..waker import SnapshotSource, resolve_guest
from .metrics_fetch import FETCH_TIMEOUT_S, HttpMetricsFetch, MetricsFetch, MetricsUnavailable
from .traefik_metrics import PXPROXY_PROVIDER, ServiceFigures, parse_service_figures
from .traefik_metrics import service_figures as figures_of
from .traffic_counters import TrafficCounters

log = logging.getLogger(__name__)

# Without Traefik routes the loop still looks at the route set this often (a reload or a
# guest's notes may add one).
ROUTES_RECHECK_S = 1.0


class RouteSource(Protocol):
    """What the watch reads of the routes (`routing.route_set.RouteStore` fits)."""

    @property
    def current(self) -> RouteSet: ...


GateLookup = Callable[[RouteConfig], Gate]


@dataclass(frozen=True, slots=True)
class ActivityReading:
    """The last look at a route's source. `held`: it could not be read, so the guest was
    held awake."""

    at: float  # the watch's clock
    active: bool
    detail: str
    held: bool = False

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "age_s": round(max(0.0, now - self.at), 3),
            "active": self.active,
            "held": self.held,
            "detail": self.detail,
        }


@dataclass
class ActivityStats:
    """Counters for tests and insight."""

    traefik_polls: int = 0
    traefik_failures: int = 0
    traffic_rounds: int = 0
    # Route name -> activity() calls: for activity seen, and for an unreadable source.
    signalled: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)


def traefik_service(route: RouteConfig) -> str:
    """The Traefik service whose metrics stand for the route: `activity.service` as written,
    else the one pxproxy's provider generates (`<name>@http`)."""
    return route.activity.service or f"{traefik_service_name(route)}@{PXPROXY_PROVIDER}"


def source_of(route: RouteConfig) -> str:
    """What /api/v1/routes shows as the route's activity source."""
    activity = route.activity
    if activity.source == "traefik":
        return f"traefik: {traefik_service(route)}"
    if activity.source == "traffic":
        return f"traffic > {activity.threshold} B/poll"
    return "proxy"


class ActivityWatch:
    """One owned task: polls Traefik's metrics every `metrics_interval` while any watched
    route reads them, and compares guests' counters on every new inventory snapshot. The
    routes are read afresh each round, so reloads and guests' notes are followed."""

    def __init__(
        self,
        routes: RouteSource,
        inventory: SnapshotSource,
        gate_for: GateLookup,
        options: Callable[[], TraefikOptions],
        *,
        clock: Callable[[], float] = time.monotonic,
        fetch: MetricsFetch | None = None,
    ) -> None:
        self._routes = routes
        self._inventory = inventory
        self._gate_for = gate_for
        self._options = options
        self._clock = clock
        self._own_fetch: HttpMetricsFetch | None = None
        if fetch is None:
            fetch = self._own_fetch = HttpMetricsFetch()
        self._fetch: MetricsFetch = fetch
        self._task: asyncio.Task[None] | None = None
        self.stats = ActivityStats()
        self._readings: dict[str, ActivityReading] = {}
        # Traefik: the last figures read (and from which URL), the outage in progress.
        self._services: dict[str, ServiceFigures] | None = None
        self._services_url: str | None = None
        self._unreadable_since: float | None = None
        # Traffic: each cluster's snapshot as last compared, and the counters seen.
        self._polled: dict[str, ClusterSnapshot] = {}
        self._traffic = TrafficCounters()

    # ------------------------------------------------------------------ for the API

    def source_of(self, route: RouteConfig) -> str:
        return source_of(route)

    def reading(self, route: RouteConfig) -> ActivityReading | None:
        return self._readings.get(route_name(route))

    def describe(self, route: RouteConfig) -> dict[str, Any]:
        """The `activity` field of the route in /api/v1/routes."""
        reading = self.reading(route)
        return {
            "source": route.activity.source,
            "detail": source_of(route),
            "reading": reading.to_json(self._clock()) if reading is not None else None,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("ActivityWatch already started")
        self._task = asyncio.create_task(self.run(), name="activity-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._own_fetch is not None:
            await self._own_fetch.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        seen = self._inventory.snapshot
        self._traffic_round(seen)
        due = loop.time()
        while True:
            if self._watched("traefik") and loop.time() >= due:
                try:
                    await self.poll_traefik()
                except Exception:  # a bug in one round must not end the watch for good
                    log.exception("activity: Traefik round failed")
                due = loop.time() + self._options().metrics_interval
            wait = max(0.0, due - loop.time()) if self._watched("traefik") else ROUTES_RECHECK_S
            with contextlib.suppress(TimeoutError):
                seen = await self._inventory.wait_until(_newer_than(seen), wait)
                self._traffic_round(seen)

    def _traffic_round(self, snapshot: Snapshot) -> None:
        try:
            self.observe_traffic(snapshot)
        except Exception:  # a bug in one round must not end the watch for good
            log.exception("activity: traffic round failed")

    # ------------------------------------------------------------------ the rounds

    def _watched(self, source: ActivitySource) -> list[RouteConfig]:
        """Routes with idle-watch (activity only matters to them) reading this source."""
        return [
            r
            for r in self._routes.current.configs
            if r.idle is not None and r.activity.source == source
        ]

    def _signal(self, route: RouteConfig, *, held: bool = False) -> None:
        self._gate_for(route).activity()
        counts = self.stats.held if held else self.stats.signalled
        name = route_name(route)
        counts[name] = counts.get(name, 0) + 1

    def _note(self, route: RouteConfig, reading: ActivityReading) -> None:
        self._readings[route_name(route)] = reading

    def _forget_removed(self) -> None:
        names = {route_name(r) for r in self._routes.current.configs}
        for name in [n for n in self._readings if n not in names]:
            del self._readings[name]

    async def poll_traefik(self) -> None:
        """One read of Traefik's metrics for every route that watches them."""
        routes = self._watched("traefik")
        self._forget_removed()
        if not routes:
            return
        self.stats.traefik_polls += 1
        url = self._options().metrics_url
        try:
            if url is None:
                raise MetricsUnavailable("integrations.traefik.metrics_url is not set")
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                text = await self._fetch(url)
            figures = parse_service_figures(text)
        except MetricsUnavailable as exc:
            self._traefik_unreadable(routes, str(exc))
            return
        except TimeoutError:
            self._traefik_unreadable(routes, f"{url}: no answer within {FETCH_TIMEOUT_S:g}s")
            return
        except ValueError as exc:  # not Prometheus text
            self._traefik_unreadable(routes, f"{url}: {exc}")
            return
        now = self._clock()
        if self._unreadable_since is not None:
            log.info(
                "activity: Traefik metrics read again after %.0fs", now - self._unreadable_since
            )
            self._unreadable_since = None
        previous = self._services if self._services_url == url else None
        self._services, self._services_url = figures, url
        for route in routes:
            service = traefik_service(route)
            after = figures_of(figures, service)
            before = figures_of(previous, service) if previous is not None else None
            self._traefik_reading(route, before, after, now)

    def _traefik_reading(
        self,
        route: RouteConfig,
        before: ServiceFigures | None,
        after: ServiceFigures,
        now: float,
    ) -> None:
        opened = after.open_connections > 0
        if before is None:
            grew = 0.0  # the first read: those requests may be of any age
        elif after.requests < before.requests:
            grew = after.requests  # Traefik restarted since: all it counted is newer
        else:
            grew = after.requests - before.requests
        active = grew > 0 or opened
        detail = f"{after.requests:.0f} requests (+{grew:.0f})"
        if before is None:
            detail += ", first read"
        if opened:
            detail += f", {after.open_connections:.0f} open"
        self._note(route, ActivityReading(now, active, detail))
        if active:
            self._signal(route)

    def _traefik_unreadable(self, routes: list[RouteConfig], error: str) -> None:
        now = self._clock()
        self.stats.traefik_failures += 1
        if self._unreadable_since is None:
            self._unreadable_since = now
            log.warning(
                "activity: Traefik metrics unreadable (%s): %d route(s) held awake until "
                "they read again",
                error,
                len(routes),
            )
        else:
            log.debug("activity: Traefik metrics still unreadable: %s", error)
        for route in routes:
            self._note(route, ActivityReading(now, False, f"unreadable: {error}", held=True))
            self._signal(route, held=True)

    def observe_traffic(self, snapshot: Snapshot) -> None:
        """Compare the counters of every guest on a `traffic` route, for each cluster that
        was polled since the last call."""
        routes = self._watched("traffic")
        self._forget_removed()
        fresh = {
            name
            for name, cluster in snapshot.clusters.items()
            if self._polled.get(name) is not cluster
        }
        self._polled = dict(snapshot.clusters)
        if not routes:
            self._traffic.keep_only(set())
            return
        self.stats.traffic_rounds += 1
        now = self._clock()
        growth: dict[str, int | None] = {}
        watched: set[str] = set()
        for route in routes:
            found = resolve_guest(snapshot, route.guest)
            if isinstance(found, str):
                self._note(route, ActivityReading(now, False, found))
                continue
            key = guest_key(found.cluster, found.id)
            watched.add(key)
            if found.cluster not in fresh:
                continue  # no poll since the last look: nothing new to compare
            cluster = snapshot.clusters[found.cluster]
            if not cluster.ok:
                error = f"unreadable: the poll of {found.cluster} failed ({cluster.error})"
                self._note(route, ActivityReading(now, False, error, held=True))
                self._signal(route, held=True)
                continue
            if key not in growth:  # routes to one guest share one comparison
                growth[key] = self._traffic.growth(found)
            self._traffic_reading(route, found.status, growth[key], now)
        self._traffic.keep_only(watched)

    def _traffic_reading(
        self, route: RouteConfig, status: str, grew: int | None, now: float
    ) -> None:
        threshold = route.activity.threshold
        if grew is None:
            detail = "new baseline" if status == "running" else f"guest {status}"
            self._note(route, ActivityReading(now, False, detail))
            return
        active = grew > threshold
        self._note(route, ActivityReading(now, active, f"+{grew} B (threshold {threshold} B)"))
        if active:
            self._signal(route)


def _newer_than(seen: Snapshot) -> Callable[[Snapshot], bool]:
    return lambda snapshot: snapshot is not seen
