"""WakeManager.update: following a new route set (a reload, or guests' notes) without losing
a waker's state, a wake in flight, or an idle stop in flight; retiring the unrouted."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.config.models import IdleConfig, RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.wake.contract import ALWAYS_READY, WakeState
from pxproxy.wake.manager import DependencyCycleError, WakeManager
from pxproxy.wake.waker import Waker

from ..support import wait_for
from .fakes import FakeClock, FakePower, FakeProbe, guest, publish, route


class Probes:
    """The probe factory, remembering every probe it made."""

    def __init__(self) -> None:
        self.made: list[FakeProbe] = []

    def __call__(self, idle: IdleConfig, route: RouteConfig) -> FakeProbe:
        probe = FakeProbe()
        self.made.append(probe)
        return probe


def manager(
    routes: list[RouteConfig],
    inventory: Inventory,
    power: FakePower,
    clock: FakeClock,
    probes: Probes | None = None,
) -> WakeManager:
    return WakeManager(
        routes,
        inventory,
        power,
        probe_factory=probes or Probes(),
        clock=clock,
        check_interval_s=0.02,
        probe_interval_s=0.01,
    )


def waker(mgr: WakeManager, r: RouteConfig) -> Waker:
    gate = mgr.gate_for(r)
    assert isinstance(gate, Waker)
    return gate


def other(ref: str, **idle: object) -> RouteConfig:
    """A route to the same guest under another host."""
    base = route(ref, 80, **idle)
    return base.model_copy(update={"host": (f"other-{host(base)}",)})


def host(r: RouteConfig) -> str:
    assert r.host is not None
    return r.host[0]


async def test_a_waker_keeps_its_state_and_identity_across_an_update() -> None:
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    publish(inventory, guest(101, "wiki"), guest(102, "blog", status="running"))
    wiki, blog = route("wiki"), route("blog")
    mgr = manager([wiki, blog], inventory, power, clock)
    mgr.tick()
    asleep, ready = waker(mgr, wiki), waker(mgr, blog)
    assert (asleep.state, ready.state) == (WakeState.ASLEEP, WakeState.READY)

    # New hosts, a new timeout, one more route: the refs are the same, so are the wakers.
    new_wiki, new_blog = other("wiki"), other("blog", timeout=120)
    mgr.update([new_blog, new_wiki, route("home:103")])
    mgr.tick()
    assert waker(mgr, new_wiki) is asleep
    assert waker(mgr, new_blog) is ready
    assert (asleep.state, ready.state) == (WakeState.ASLEEP, WakeState.READY)
    assert mgr.states()[:2] == [(0, WakeState.READY), (1, WakeState.ASLEEP)]
    assert power.calls == []  # nothing was woken or stopped by the update
    assert ready.routes == [host(new_blog)]
    await mgr.stop()


async def test_a_new_idle_timeout_applies_to_the_next_idle_check() -> None:
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    publish(inventory, guest(101, "wiki", status="running"))
    first = route("wiki", timeout=60)
    mgr = manager([first], inventory, power, clock)
    mgr.tick()
    gate = waker(mgr, first)
    assert gate.state is WakeState.READY
    clock.advance(10)
    mgr.tick()
    assert power.calls == []  # 10 s of a 60 s timeout: not idle yet

    shorter = route("wiki", timeout=10, stop_method="stop")
    mgr.update([shorter])
    assert waker(mgr, shorter) is gate
    mgr.tick()
    await wait_for(lambda: gate.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["stop"]  # the new stop_method too
    await mgr.stop()


async def test_new_readiness_settings_replace_the_probe_and_the_old_one_is_closed() -> None:
    inventory, power, clock, probes = Inventory(), FakePower(), FakeClock(), Probes()
    publish(inventory, guest(101, "wiki"))
    mgr = manager([route("wiki", port=80)], inventory, power, clock, probes)
    await mgr.start()
    assert len(probes.made) == 1
    mgr.update([route("wiki", port=8080)])
    assert len(probes.made) == 2
    assert mgr.wakers[0].port == 8080
    await wait_for(lambda: probes.made[0].closed, 5, "the replaced probe to be closed")
    assert not probes.made[1].closed
    await mgr.gate_for(0).ready()
    assert probes.made[1].checks
    assert all(port == 8080 for _, port in probes.made[1].checks)
    await mgr.stop()


async def test_an_unrouted_waker_is_retired_and_never_idle_stopped() -> None:
    inventory, power, clock, probes = Inventory(), FakePower(), FakeClock(), Probes()
    publish(inventory, guest(101, "wiki", status="running"), guest(102, "blog", status="running"))
    wiki, blog = route("wiki", timeout=10), route("blog", timeout=10)
    mgr = manager([wiki, blog], inventory, power, clock, probes)
    await mgr.start()
    gone = waker(mgr, wiki)
    kept = waker(mgr, blog)
    mgr.update([blog])
    assert gone not in mgr.wakers
    assert mgr.gate_for(wiki) is ALWAYS_READY  # a route of the old set: no idle-watch
    assert mgr.waker_for(guest(101, "wiki")) is None
    checks = kept.busy_checks
    with kept.hold():  # so that rounds can be counted: each finds blog held
        clock.advance(3600)
        await wait_for(lambda: kept.busy_checks >= checks + 3, 5, "three idle rounds")
    clock.advance(10)  # blog's idle clock began when the hold ended
    await wait_for(lambda: kept.state is WakeState.ASLEEP, 5, "blog's idle stop")
    assert power.actions(101) == []  # wiki, idle for an hour, was never stopped
    assert power.actions(102) == ["shutdown"]
    await wait_for(lambda: probes.made[0].closed, 5, "the retired waker closed")
    await mgr.stop()


async def test_a_wake_in_flight_on_a_retired_waker_finishes_for_its_waiter() -> None:
    inventory, clock, probes = Inventory(), FakeClock(), Probes()
    power = FakePower(gate=asyncio.Event())
    publish(inventory, guest(101, "wiki"), guest(102, "blog", status="running"))
    wiki, blog = route("wiki", timeout=10), route("blog", timeout=10)
    mgr = manager([wiki, blog], inventory, power, clock, probes)
    await mgr.start()
    gate, kept = waker(mgr, wiki), waker(mgr, blog)
    waiter = asyncio.create_task(gate.ready())
    await wait_for(lambda: power.calls == [("start", 101)], 5, "the start call")

    mgr.update([blog])
    assert gate.in_flight
    assert power.gate is not None
    power.gate.set()
    publish(inventory, guest(101, "wiki", status="running"), guest(102, "blog", status="running"))
    async with asyncio.timeout(5):
        await waiter  # the waiter's answer: ready, not an error
    assert gate.state is WakeState.READY
    await wait_for(lambda: probes.made[0].closed, 5, "the retired waker closed after its wake")
    # An hour of idle rounds (counted on blog, held): wiki is never stopped.
    checks = kept.busy_checks
    with kept.hold():
        clock.advance(3600)
        await wait_for(lambda: kept.busy_checks >= checks + 3, 5, "three idle rounds")
    assert power.actions(101) == ["start"]
    await mgr.stop()


async def test_an_idle_stop_in_flight_on_a_retired_waker_finishes_cleanly() -> None:
    inventory, clock, probes = Inventory(), FakeClock(), Probes()
    power = FakePower(stop_gate=asyncio.Event())
    publish(inventory, guest(101, "wiki", status="running"))
    wiki = route("wiki", timeout=10)
    mgr = manager([wiki], inventory, power, clock, probes)
    await mgr.start()
    gate = waker(mgr, wiki)
    clock.advance(10)
    await wait_for(lambda: gate.state is WakeState.STOPPING, 5, "the idle stop to begin")

    mgr.update([])
    assert power.stop_gate is not None
    power.stop_gate.set()
    await wait_for(lambda: not gate.in_flight, 5, "the stop to end")
    assert gate._stop_task is not None
    assert gate._stop_task.exception() is None
    assert gate.state is WakeState.ASLEEP
    assert power.actions() == ["shutdown"]
    await wait_for(lambda: probes.made[0].closed, 5, "the retired waker closed")
    await mgr.stop()


async def test_a_route_back_while_its_retired_wake_runs_joins_that_wake() -> None:
    inventory, clock = Inventory(), FakeClock()
    power = FakePower(gate=asyncio.Event())
    publish(inventory, guest(101, "wiki"))
    wiki = route("wiki")
    mgr = manager([wiki], inventory, power, clock)
    await mgr.start()
    gate = waker(mgr, wiki)
    first = asyncio.create_task(gate.ready())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    mgr.update([])  # e.g. a guest's notes edited in two steps
    mgr.update([wiki])
    again = mgr.gate_for(wiki)
    assert again is gate  # the waker that is waking the guest, not a second one
    second = asyncio.create_task(again.ready())
    assert power.gate is not None
    power.gate.set()
    publish(inventory, guest(101, "wiki", status="running"))
    async with asyncio.timeout(5):
        await asyncio.gather(first, second)
    assert power.actions() == ["start"]
    await mgr.stop()


async def test_a_guest_only_depended_on_now_is_never_idle_stopped() -> None:
    """db had its own idle route; the reload keeps only app, which depends on db: db is
    woken for app and never stopped, like any dependency without idle settings."""
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    running = [guest(101, "app", status="running"), guest(102, "db", status="running")]
    publish(inventory, *running)
    app = route("app", timeout=3600, depends_on=["db"])
    db = route("db", timeout=10)
    mgr = manager([app, db], inventory, power, clock)
    await mgr.start()
    db_waker = waker(mgr, db)
    mgr.update([app])
    assert db_waker in mgr.wakers  # still a dependency of app
    assert db_waker.idle is None
    app_waker = waker(mgr, app)
    checks = app_waker.busy_checks
    with app_waker.hold():
        clock.advance(20)
        await wait_for(lambda: app_waker.busy_checks >= checks + 3, 5, "three idle rounds")
    assert power.calls == []
    await mgr.stop()


async def test_a_cycle_raises_and_changes_nothing() -> None:
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    publish(inventory, guest(101, "a"), guest(102, "b"))
    a, b = route("a", timeout=60), route("b", timeout=60)
    mgr = manager([a, b], inventory, power, clock)
    mgr.tick()
    gates = [mgr.gate_for(0), mgr.gate_for(1)]
    wakers = mgr.wakers
    states = mgr.states()
    idles = [w.idle for w in wakers]
    cyclic = [route("a", timeout=5, depends_on=["b"]), route("b", depends_on=["a"]), route("c")]
    with pytest.raises(DependencyCycleError, match="cycle"):
        mgr.update(cyclic)
    assert [mgr.gate_for(0), mgr.gate_for(1)] == gates
    assert all(x is y for x, y in zip([mgr.gate_for(0), mgr.gate_for(1)], gates, strict=True))
    assert mgr.wakers == wakers
    assert [w.idle for w in wakers] == idles
    assert mgr.states() == states
    assert all(not w.dependencies for w in wakers)
    await mgr.stop()


async def test_a_route_back_under_another_ref_joins_the_wake_of_its_guest() -> None:
    """`wiki` becomes `home:101` (a config route moved into the guest's notes) while the
    guest is waking: the new ref takes the waker that is waking it, no second start."""
    inventory, clock = Inventory(), FakeClock()
    power = FakePower(gate=asyncio.Event())
    publish(inventory, guest(101, "wiki"))
    by_name = route("wiki")
    mgr = manager([by_name], inventory, power, clock)
    await mgr.start()
    gate = waker(mgr, by_name)
    first = asyncio.create_task(gate.ready())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    by_id = route("home:101")
    mgr.update([by_id])
    assert mgr.gate_for(by_id) is gate
    second = asyncio.create_task(mgr.gate_for(by_id).ready())
    assert power.gate is not None
    power.gate.set()
    publish(inventory, guest(101, "wiki", status="running"))
    async with asyncio.timeout(5):
        await asyncio.gather(first, second)
    assert power.actions() == ["start"]
    await mgr.stop()


async def test_a_connection_open_across_a_route_gone_and_back_keeps_the_guest_awake() -> None:
    """Notes edited with a typo, then fixed: the route goes and comes back while a
    WebSocket holds the guest. The held waker is kept, taken back, and the guest is not
    idle-stopped under the open connection."""
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    publish(inventory, guest(101, "wiki", status="running"))
    wiki = route("wiki", timeout=10)
    mgr = manager([wiki], inventory, power, clock)
    await mgr.start()
    gate = waker(mgr, wiki)
    with gate.hold():
        mgr.update([])
        checks = mgr.stats.wakes_started  # unchanged below: nothing is woken either
        await wait_for(lambda: gate in mgr._retired, 5, "the waker retired")
        clock.advance(60)
        mgr.update([wiki])
        assert mgr.gate_for(wiki) is gate
        busy = gate.busy_checks
        clock.advance(3600)
        await wait_for(lambda: gate.busy_checks >= busy + 3, 5, "three idle rounds, held")
    assert power.actions(101) == []
    assert mgr.stats.wakes_started == checks
    await mgr.stop()


async def test_a_route_moved_to_another_ref_follows_that_ref_afterwards() -> None:
    """`wiki` became `home:101` (the same guest); later VM 101 is renamed and a new VM takes
    the name `wiki`. The route names VM 101: its wakes start VM 101, not the new `wiki`."""
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    publish(inventory, guest(101, "wiki"))
    by_name = route("wiki")
    mgr = manager([by_name], inventory, power, clock)
    await mgr.start()
    gate = waker(mgr, by_name)
    by_id = route("home:101")
    mgr.update([by_id])
    assert mgr.gate_for(by_id) is gate  # the same waker, now under the new ref
    assert gate.ref == "home:101"
    publish(inventory, guest(101, "old-wiki"), guest(102, "wiki"))
    waiter = asyncio.create_task(mgr.gate_for(by_id).ready())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    publish(inventory, guest(101, "old-wiki", status="running"), guest(102, "wiki"))
    async with asyncio.timeout(5):
        await waiter
    assert power.calls == [("start", 101)]
    await mgr.stop()
