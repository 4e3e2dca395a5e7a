"""Wakers for the configured routes, and the one background task that drives them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from ..config.models import IdleConfig, RouteConfig
from ..inventory.snapshot import Snapshot
from ..startup_summary import route_name
from ..state.store import SavedState
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

    Call `start()` once the inventory is polling and `stop()` on shutdown.
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
        self._by_key: dict[str, Waker] = {}
        self._gates: list[Gate] = []
        self._route_keys: dict[Waker, list[str]] = {}
        self._carry: SavedState | None = None

        def make(ref: str, idle: IdleConfig | None, route: RouteConfig | None) -> Waker:
            return Waker(
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
            )

        for route in self._routes:
            if route.idle is None:
                self._gates.append(AlwaysReady())
                continue
            key = self._key(route.guest)
            waker = self._by_key.get(key)
            if waker is None:
                waker = self._by_key[key] = make(route.guest, route.idle, route)
            waker.routes.append(route_name(route))
            self._gates.append(waker)
        for waker in list(self._by_key.values()):
            for ref in waker.idle.depends_on if waker.idle else ():
                key = self._key(ref)
                dep = self._by_key.get(key)
                if dep is None:
                    # Woken for its dependents, never stopped: it has no idle settings.
                    dep = self._by_key[key] = make(ref, None, None)
                waker.dependencies.append(dep)
                dep.dependents.append(waker)
        self._check_cycles()

    def _key(self, ref: str) -> str:
        """The guest a ref names now, so that refs by name and by vmid share a waker; a ref
        that does not resolve yet is keyed by its text."""
        found = resolve_guest(self._inventory.snapshot, ref)
        return f"ref:{ref.strip().lower()}" if isinstance(found, str) else f"guest:{found.ref}"

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

        for waker in self._by_key.values():
            visit(waker, [])

    # ------------------------------------------------------------------ for the proxy/API

    def gate_for(self, route_index: int) -> Gate:
        """The gate of routes[route_index]: its guest's Waker, or AlwaysReady without idle."""
        return self._gates[route_index]

    def states(self) -> list[tuple[int, WakeState]]:
        """(route index, state) for every route, for `/api/v1/routes`."""
        return [(i, gate.state) for i, gate in enumerate(self._gates)]

    def note_power_action(self, guest_ref: str, action: str) -> None:
        """The power API ran `action` on the guest `guest_ref` (cluster:vmid): its waker
        takes what the inventory shows next as pxproxy's doing, not a change made outside."""
        snapshot = self._inventory.snapshot
        for waker in self._by_key.values():
            found = resolve_guest(snapshot, waker.ref)
            if not isinstance(found, str) and found.ref == guest_ref:
                waker.note_power_action(action)

    def records(self) -> SavedState:
        """What of idle-watch survives a restart, now (`state.writer.StateSource`)."""
        if self._carry is not None and all(w.persisted() for w in self._by_key.values()):
            self._carry = None  # every guest found: the loaded records are all taken over
        return wake_records(self._by_key.values(), self._route_keys, self._carry)

    @property
    def wakers(self) -> list[Waker]:
        """Every waker, dependencies included."""
        return list(self._by_key.values())

    # ------------------------------------------------------------------ lifecycle

    def tick(self) -> None:
        """One round: follow the current snapshot, then check idle deadlines."""
        snapshot = self._inventory.snapshot
        for waker in self._by_key.values():
            waker.observe(snapshot)
        for waker in self._by_key.values():
            waker.check_idle()

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
        self._route_keys = routes_of(self._routes, self._gates)
        if saved is not None:
            self._carry = saved
            snapshot = self._inventory.snapshot
            wakers = self._by_key.values()
            await restore_wakers(wakers, self._route_keys, snapshot, saved, status or {})
        self.tick()
        self._task = asyncio.create_task(self._run(), name="idle-watch")

    async def stop(self) -> None:
        """Cancel and await the background task and every wake or stop in flight."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for waker in self._by_key.values():
            await waker.close()

    async def _run(self) -> None:
        seen = self._inventory.snapshot
        while True:
            # A new snapshot, or the idle check interval, whichever comes first.
            with contextlib.suppress(TimeoutError):
                seen = await self._inventory.wait_until(_newer_than(seen), self._check_interval_s)
            try:
                self.tick()
            except Exception:  # a bug in one round must not end idle-watch for good
                log.exception("idle-watch round failed")


def _newer_than(seen: Snapshot) -> Callable[[Snapshot], bool]:
    return lambda snapshot: snapshot is not seen
