"""Wakers for the configured routes, and the one background task that drives them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from ..config.models import IdleConfig, RouteConfig
from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from ..shutdown import cancel_and_wait
from ..startup_summary import route_name
from ..state.store import SavedState, guest_key
from .contract import AlwaysReady, Gate, WakeState
from .power import PowerControl
from .readiness import Probe, probe_for
from .restore import GuestStatusApi, restore_wakers, routes_of, wake_records
from .stats import WakeObserver, WakeStats
from .waker import PROBE_INTERVAL_S, SYNC_GRACE_S, SnapshotSource, Waker, resolve_guest

log = logging.getLogger(__name__)

# Idle deadlines are checked this often (and on every new snapshot).
IDLE_CHECK_INTERVAL_S = 1.0

ProbeFactory = Callable[[IdleConfig, RouteConfig], Probe]


def default_probe(idle: IdleConfig, route: RouteConfig) -> Probe:
    return probe_for(idle, route.scheme)


class DependencyCycleError(ValueError):
    """depends_on refs form a cycle: none of them could ever be woken first."""


class WakeManager:
    """Builds one Waker per guest that has an idle route (routes to one guest share it; the
    first route's idle settings and port win) plus Wakers for their depends_on guests.

    Refs resolve lazily: wakers are built from the config at once, one per ref text, and
    bound to the guest a ref names when it is first found; wakers whose refs turn out to name
    one guest (by name and by vmid) are merged into the first. Call `start()` once, `stop()`
    on shutdown; gates work from construction on (a wake waits for the first poll).
    """

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        inventory: SnapshotSource,
        power: PowerControl,
        *,
        probe_factory: ProbeFactory = default_probe,
        clock: Callable[[], float] = time.monotonic,
        observer: WakeObserver | None = None,
        check_interval_s: float = IDLE_CHECK_INTERVAL_S,
        probe_interval_s: float = PROBE_INTERVAL_S,
        sync_grace_s: float = SYNC_GRACE_S,
    ) -> None:
        self.stats = WakeStats()
        self._routes = tuple(routes)
        self._inventory = inventory
        self._check_interval_s = check_interval_s
        self._task: asyncio.Task[None] | None = None
        self._wakers: list[Waker] = []  # in the order built: route wakers first
        self._by_guest: dict[str, Waker] = {}  # guest key -> the waker that owns the guest
        self._merged: list[Waker] = []  # merged away: closed on stop
        self._gates: list[Gate] = []
        self._carry: SavedState | None = None
        self._saved: SavedState | None = None
        self._status: Mapping[str, GuestStatusApi] = {}
        by_ref: dict[str, Waker] = {}

        def make(ref: str, idle: IdleConfig | None, route: RouteConfig | None) -> Waker:
            waker = Waker(
                ref,
                inventory=inventory,
                power=power,
                idle=idle,
                port=route.port if route else None,
                probe=probe_factory(idle, route) if idle and route else None,
                clock=clock,
                stats=self.stats,
                observer=observer,
                probe_interval_s=probe_interval_s,
                sync_grace_s=sync_grace_s,
                bind=self._bound,
            )
            self._wakers.append(waker)
            return by_ref.setdefault(ref.strip().lower(), waker)

        for route in self._routes:
            if route.idle is None:
                self._gates.append(AlwaysReady())
                continue
            waker = by_ref.get(route.guest.strip().lower()) or make(route.guest, route.idle, route)
            waker.routes.append(route_name(route))
            self._gates.append(waker)
        for waker in list(self._wakers):
            for ref in waker.idle.depends_on if waker.idle else ():
                # Woken for its dependents, never stopped: it has no idle settings.
                dep = by_ref.get(ref.strip().lower()) or make(ref, None, None)
                waker.dependencies.append(dep)
                dep.dependents.append(waker)
        self._check_cycles()
        self._bind_all()

    def _check_cycles(self) -> None:
        done: set[int] = set()

        def visit(waker: Waker, path: list[Waker]) -> None:
            if waker in path:
                cycle = " -> ".join(w.ref for w in [*path[path.index(waker) :], waker])
                raise DependencyCycleError(f"depends_on forms a cycle: {cycle}")
            if id(waker) in done:
                return
            for dep in waker.dependencies:
                visit(dep, [*path, waker])
            done.add(id(waker))

        for waker in self._wakers:
            visit(waker, [])

    # ------------------------------------------------------------------ lazy refs

    def _bind_all(self) -> None:
        """Bind every waker whose ref names a guest in the live snapshot, in the order built
        (so a route's waker owns its guest before a dependency-only one does)."""
        snapshot = self._inventory.snapshot
        if not snapshot.clusters:
            return
        for waker in list(self._wakers):
            found = resolve_guest(snapshot, waker.ref)
            if isinstance(found, str):
                continue
            key = guest_key(found.cluster, found.id)
            owner = self._by_guest.setdefault(key, waker)
            if owner is not waker:
                self._merge(waker, owner)

    def _bound(self, waker: Waker) -> Waker:
        """The waker that owns the guest `waker`'s ref names now (a wake asks before it acts)."""
        self._bind_all()
        while waker.merged is not None:
            waker = waker.merged
        return waker

    def _merge(self, dup: Waker, owner: Waker) -> None:
        log.info("idle-watch: %s and %s name one guest: one waker for both", owner.ref, dup.ref)
        dup.merge_into(owner)
        self._gates = [owner if gate is dup else gate for gate in self._gates]
        for dep in dup.dependencies:
            dep.dependents = [d for d in dep.dependents if d is not dup]
            if dep is owner or dep in owner.dependencies or _reaches(dep, owner):
                continue  # a self-reference or a cycle through the merged guest: dropped
            owner.dependencies.append(dep)
            dep.dependents.append(owner)
        for dependent in dup.dependents:
            if dependent is owner:  # the owner depended on its own guest: dropped
                owner.dependencies = [d for d in owner.dependencies if d is not dup]
                continue
            deps = [owner if d is dup else d for d in dependent.dependencies]
            dependent.dependencies = list(dict.fromkeys(deps))
            if dependent not in owner.dependents:
                owner.dependents.append(dependent)
        self._wakers.remove(dup)
        self._merged.append(dup)

    # ------------------------------------------------------------------ for the proxy/API

    def gate_for(self, route_index: int) -> Gate:
        """The gate of routes[route_index]: its guest's Waker, or AlwaysReady without idle."""
        return self._gates[route_index]

    def states(self) -> list[tuple[int, WakeState]]:
        """(route index, state) for every route, for `/api/v1/routes`."""
        return [(i, gate.state) for i, gate in enumerate(self._gates)]

    def waker_for(self, guest: Guest) -> Waker | None:
        """The waker of a guest (cluster:vmid), if it has an idle route or is a dependency."""
        self._bind_all()
        return self._by_guest.get(guest_key(guest.cluster, guest.id))

    def records(self) -> SavedState:
        """What of idle-watch survives a restart, now (`state.writer.StateSource`)."""
        if self._carry is not None and all(w.persisted() for w in self._wakers):
            self._carry = None  # every guest found: the loaded records are all taken over
        return wake_records(self._wakers, routes_of(self._routes, self._gates), self._carry)

    @property
    def wakers(self) -> list[Waker]:
        """Every waker, dependencies included."""
        return list(self._wakers)

    # ------------------------------------------------------------------ lifecycle

    def tick(self) -> None:
        """One round: follow the current snapshot, then check idle deadlines."""
        self._bind_all()
        snapshot = self._inventory.snapshot
        for waker in list(self._wakers):
            waker.observe(snapshot)
        for waker in list(self._wakers):
            waker.check_idle()

    async def _restore_found(self) -> None:
        """The last run's records, for each waker whose guest the snapshot now shows (with
        status/current where it matters): a guest that appears late still gets them."""
        if self._saved is None:
            return
        self._bind_all()
        snapshot = self._inventory.snapshot
        found = [
            w
            for w in self._wakers
            if w.restoring and not isinstance(resolve_guest(snapshot, w.ref), str)
        ]
        if found:
            keys = routes_of(self._routes, self._gates)
            await restore_wakers(found, keys, snapshot, self._saved, self._status)

    async def start(
        self,
        saved: SavedState | None = None,
        *,
        status: Mapping[str, GuestStatusApi] | None = None,
    ) -> None:
        """`saved`: what the last run left (pxproxy/state/); `status`: a client per cluster
        to ask status/current of running VMs on suspend routes (paused or not)."""
        if self._task is not None:
            raise RuntimeError("WakeManager already started")
        if saved is not None:
            self._carry = self._saved = saved
            self._status = status or {}
            for waker in self._wakers:
                waker.restore_pending()
        await self._restore_found()
        self.tick()
        self._task = asyncio.create_task(self._run(), name="idle-watch")

    async def stop(self) -> None:
        """Cancel and await the background task and every wake or stop in flight."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for waker in [*self._wakers, *self._merged]:
            await waker.close()

    async def _run(self) -> None:
        seen = self._inventory.snapshot
        while True:
            # A new snapshot, or the idle check interval, whichever comes first.
            with contextlib.suppress(TimeoutError):
                seen = await self._inventory.wait_until(_newer_than(seen), self._check_interval_s)
            try:
                await self._restore_found()
                self.tick()
            except Exception:  # a bug in one round must not end idle-watch for good
                log.exception("idle-watch round failed")


def _reaches(start: Waker, target: Waker) -> bool:
    """Whether `target` is among the dependencies of `start`, however deep."""
    seen: set[int] = set()
    todo = [start]
    while todo:
        waker = todo.pop()
        if waker is target:
            return True
        if id(waker) not in seen:
            seen.add(id(waker))
            todo.extend(waker.dependencies)
    return False


def _newer_than(seen: Snapshot) -> Callable[[Snapshot], bool]:
    return lambda snapshot: snapshot is not seen
