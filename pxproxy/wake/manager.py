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
from ..routing.route_set import route_name
from ..shutdown import cancel_and_wait
from ..state.store import SavedState, guest_key
from .before_stop import GuestCommands
from .contract import ALWAYS_READY, Gate, WakeState
from .news import WakeNews
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
    return probe_for(idle, route.scheme, route.protocol)


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
        commands: GuestCommands | None = None,
    ) -> None:
        self.stats = WakeStats()
        # Every waker's state changes and idle outcomes, for whoever listens (the event hub).
        self.news = WakeNews()
        self._commands = commands  # runs idle.before_stop (None: it fails, the stop goes on)
        self._routes: tuple[RouteConfig, ...] = ()
        self._inventory = inventory
        self._power = power
        self._probe_factory = probe_factory
        self._clock = clock
        self._observer = observer
        self._probe_interval_s = probe_interval_s
        self._sync_grace_s = sync_grace_s
        self._check_interval_s = check_interval_s
        self._task: asyncio.Task[None] | None = None
        self._wakers: list[Waker] = []  # owners, in the order built: route wakers first
        self._by_ref: dict[str, Waker] = {}  # ref text (lowercase) -> the waker made for it
        self._by_guest: dict[str, Waker] = {}  # guest key -> the waker that owns the guest
        self._merged: list[Waker] = []  # merged away: closed on stop
        # No longer routed to, but a wake or stop was in flight: closed once it is done.
        self._retired: list[Waker] = []
        # Only a dependency now: idle settings dropped once no stop of theirs is in flight.
        self._unidle: list[Waker] = []
        self._old_probes: list[Probe] = []
        self._carry: SavedState | None = None
        self._saved: SavedState | None = None
        self._status: Mapping[str, GuestStatusApi] = {}
        self.update(routes)

    # ------------------------------------------------------------------ the route set

    def update(self, routes: Sequence[RouteConfig]) -> None:
        """Follow a new route set (a reload, or guests' notes): wakers of refs still routed
        keep their state and take the new idle settings; new refs get wakers; wakers no
        longer routed to are retired once no wake or stop of theirs is in flight. Raises
        DependencyCycleError, changing nothing, when depends_on would form a cycle."""
        plan = _plan(routes)
        _check_plan(plan)
        self._routes = tuple(routes)
        made: list[Waker] = []
        for key, (ref, settings, first) in plan.items():
            if key not in self._by_ref:
                waker = self._revive(key, ref) or self._adopt(ref, plan)
                if waker is None:
                    waker = self._make(ref, settings, first)
                    made.append(waker)
                self._by_ref[key] = waker
        done: set[int] = set()
        for key, (_, settings, first) in plan.items():
            owner = _owner(self._by_ref[key])
            if settings is not None and first is not None and id(owner) not in done:
                done.add(id(owner))
                self._reconfigure(owner, settings, first)
        # Guests now only depended on (their own idle route gone): woken, never stopped.
        self._unidle = []
        for key in plan:
            owner = _owner(self._by_ref[key])
            if id(owner) not in done and owner.idle is not None and owner not in self._unidle:
                self._unidle.append(owner)
        for key in [k for k in self._by_ref if k not in plan]:
            del self._by_ref[key]
        needed = {id(_owner(w)) for w in self._by_ref.values()}
        for waker in [w for w in self._wakers if id(w) not in needed]:
            self._retire(waker)
        self._link(plan)
        self._bind_all()
        self._drop_idle()
        # New wakers learn their guest's state now, not at the next round: until then a
        # running guest would look asleep (to DNS, to Traefik's provider, to the proxy).
        # (Before start() nothing is observed: start() applies the saved state first.)
        snapshot = self._inventory.snapshot
        for waker in made if self._task is not None else ():
            if waker.merged is None:
                waker.observe(snapshot)

    def _make(self, ref: str, idle: IdleConfig | None, route: RouteConfig | None) -> Waker:
        waker = Waker(
            ref,
            inventory=self._inventory,
            power=self._power,
            idle=idle,
            port=route.port if route else None,
            probe=self._probe_factory(idle, route) if idle and route else None,
            clock=self._clock,
            stats=self.stats,
            observer=self._observer,
            probe_interval_s=self._probe_interval_s,
            sync_grace_s=self._sync_grace_s,
            bind=self._bound,
            commands=self._commands,
            news=self.news,
        )
        if route is not None:
            waker.scheme, waker.protocol = route.scheme, route.protocol
        self._wakers.append(waker)
        return waker

    def _reconfigure(self, waker: Waker, idle: IdleConfig, route: RouteConfig) -> None:
        if (
            waker.idle == idle
            and waker.port == route.port
            and waker.scheme == route.scheme
            and waker.protocol == route.protocol
        ):
            return
        old = waker.reconfigure(idle, route.port, route.scheme, self._probe_factory(idle, route))
        waker.protocol = route.protocol  # a TCP route turned UDP on one port probes anew
        if old is not None:
            self._old_probes.append(old)

    def _retire(self, waker: Waker) -> None:
        # Not ticked from now on, so never stopped again. `retire()` (idle off) waits for
        # `_reap`: an idle stop in flight reads its settings as it ends.
        log.info("idle-watch: %s is no longer routed to; idle-watch lets it be", waker.ref)
        self._wakers.remove(waker)
        for key in [k for k, w in self._by_guest.items() if w is waker]:
            del self._by_guest[key]
        if waker in self._unidle:
            self._unidle.remove(waker)
        self._retired.append(waker)

    def _guest_of(self, ref: str) -> str | None:
        snapshot = self._inventory.snapshot
        if not snapshot.clusters:
            return None
        found = resolve_guest(snapshot, ref)
        return None if isinstance(found, str) else guest_key(found.cluster, found.id)

    def _revive(self, key: str, ref: str) -> Waker | None:
        """A retired waker of this ref, or of the guest this ref names now (`wiki` became
        `home:101`), routed to again before it was closed: it goes on with its state, so a
        wake it runs is joined rather than begun a second time, and connections it holds
        keep the guest awake. It takes the new ref: the guest is whatever that names."""
        guest = self._guest_of(ref)
        for waker in self._retired:
            if _key(waker.ref) == key or (guest is not None and waker.guest_key == guest):
                log.info("idle-watch: %s is routed to again, as %s", waker.ref, ref)
                self._retired.remove(waker)
                self._wakers.append(waker)
                waker.ref = ref
                return waker
        return None

    def _adopt(self, ref: str, plan: Plan) -> Waker | None:
        """The waker of the guest this new ref names, when the ref it had is routed to no
        more (`wiki` became `home:101`): it takes the new ref, with its state and any wake
        in flight, rather than a second waker starting the guest again. From now on it
        follows what the new ref names (a later `wiki` is another guest)."""
        guest = self._guest_of(ref)
        owner = self._by_guest.get(guest) if guest is not None else None
        if owner is None or owner.merged is not None or _key(owner.ref) in plan:
            return None  # nobody has it, or its old ref is still routed: merged as usual
        log.info("idle-watch: %s is now routed to as %s", owner.ref, ref)
        owner.ref = ref
        return owner

    def _drop_idle(self) -> None:
        """Idle settings off for wakers now only depended on, once nothing is in flight."""
        for waker in [w for w in self._unidle if not w.in_flight]:
            self._unidle.remove(waker)
            waker.retire()

    def _link(self, plan: Plan) -> None:
        """Dependencies and route names from the plan, between the owning wakers."""
        for waker in self._wakers:
            waker.dependencies, waker.dependents, waker.routes = [], [], []
        for route in self._routes:
            if route.idle is not None:
                owner = _owner(self._by_ref[_key(route.guest)])
                name = route_name(route)
                if name not in owner.routes:
                    owner.routes.append(name)
        for key, (_, idle, _) in plan.items():
            owner = _owner(self._by_ref[key])
            for ref in idle.depends_on if idle else ():
                dep = _owner(self._by_ref[_key(ref)])
                if dep is owner or dep in owner.dependencies or _reaches(dep, owner):
                    continue  # two refs to one guest: a self-reference or a cycle, dropped
                owner.dependencies.append(dep)
                dep.dependents.append(owner)

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
        return _owner(waker)

    def _merge(self, dup: Waker, owner: Waker) -> None:
        log.info("idle-watch: %s and %s name one guest: one waker for both", owner.ref, dup.ref)
        dup.merge_into(owner)
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

    def gate_for(self, route: RouteConfig | int) -> Gate:
        """The gate of a route (or of the route at that position in the current set): its
        guest's Waker, or an always-ready gate without idle."""
        if isinstance(route, int):
            route = self._routes[route]
        if route.idle is None:
            return ALWAYS_READY
        waker = self._by_ref.get(_key(route.guest))
        # A route of a set not applied yet (never from the published set): no idle-watch.
        return _owner(waker) if waker is not None else ALWAYS_READY

    def states(self) -> list[tuple[int, WakeState]]:
        """(position in the current route set, state) of every route."""
        return [(i, self.gate_for(r).state) for i, r in enumerate(self._routes)]

    def waker_for(self, guest: Guest) -> Waker | None:
        """The waker of a guest (cluster:vmid), if it has an idle route or is a dependency."""
        self._bind_all()
        return self._by_guest.get(guest_key(guest.cluster, guest.id))

    def records(self) -> SavedState:
        """What of idle-watch survives a restart, now (`state.writer.StateSource`)."""
        if self._carry is not None and all(w.persisted() for w in self._wakers):
            self._carry = None  # every guest found: the loaded records are all taken over
        return wake_records(self._wakers, self._route_keys(), self._carry)

    def _route_keys(self) -> dict[Waker, list[str]]:
        return routes_of(self._routes, [self.gate_for(r) for r in self._routes])

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
            await restore_wakers(found, self._route_keys(), snapshot, self._saved, self._status)

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
        for waker in [*self._wakers, *self._merged, *self._retired]:
            await waker.close()
        self._retired.clear()
        await self._close_probes()

    async def _reap(self) -> None:
        """Close retired wakers whose wake or stop has ended, and replaced probes."""
        self._drop_idle()
        # A connection still open on a retired waker keeps it: the route may come back.
        for waker in [w for w in self._retired if not w.in_flight and not w.held]:
            self._retired.remove(waker)
            waker.retire()
            await waker.close()
        await self._close_probes()

    async def _close_probes(self) -> None:
        probes, self._old_probes = self._old_probes, []
        for probe in probes:
            await probe.close()

    async def _run(self) -> None:
        seen = self._inventory.snapshot
        while True:
            # A new snapshot, or the idle check interval, whichever comes first.
            with contextlib.suppress(TimeoutError):
                seen = await self._inventory.wait_until(_newer_than(seen), self._check_interval_s)
            try:
                await self._restore_found()
                self.tick()
                await self._reap()
            except Exception:  # a bug in one round must not end idle-watch for good
                log.exception("idle-watch round failed")


def _key(ref: str) -> str:
    return ref.strip().lower()


def _owner(waker: Waker) -> Waker:
    while waker.merged is not None:
        waker = waker.merged
    return waker


Plan = dict[str, tuple[str, IdleConfig | None, RouteConfig | None]]


def _plan(routes: Sequence[RouteConfig]) -> Plan:
    """Ref (lowercase) -> (ref, idle settings, first route) of every guest idle-watch needs:
    the first route's settings win; depends_on guests have none (woken, never stopped)."""
    plan: Plan = {}
    for route in routes:
        if route.idle is not None:
            plan.setdefault(_key(route.guest), (route.guest, route.idle, route))
    for _, idle, _ in list(plan.values()):
        for dep in idle.depends_on if idle else ():
            plan.setdefault(_key(dep), (dep, None, None))
    return plan


def check_routes(routes: Sequence[RouteConfig]) -> None:
    """Raise DependencyCycleError if these routes' depends_on form a cycle."""
    _check_plan(_plan(routes))


def _check_plan(plan: Plan) -> None:
    """depends_on between refs must not form a cycle: none of them could be woken first."""
    done: set[str] = set()

    def visit(key: str, path: list[str]) -> None:
        if key in path:
            cycle = " -> ".join(plan[k][0] for k in [*path[path.index(key) :], key])
            raise DependencyCycleError(f"depends_on forms a cycle: {cycle}")
        if key in done:
            return
        idle = plan[key][1]
        for ref in idle.depends_on if idle else ():
            visit(_key(ref), [*path, key])
        done.add(key)

    for key in plan:
        visit(key, [])


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
