"""WakeManager: wakers per guest, dependencies, the background task, states and stats."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.config.models import IdleConfig, RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.wake.contract import AlwaysReady, WakeError, WakeState
from pxproxy.wake.manager import DependencyCycleError, WakeManager

from ..support import wait_for
from .fakes import FakeClock, FakePower, FakeProbe, guest, publish, route


class Recorder:
    """A WakeObserver, shaped like pxproxy.metrics.Metrics."""

    def __init__(self) -> None:
        self.wakes: list[tuple[str, bool]] = []
        self.stops: list[str] = []

    def wake_finished(self, guest: str, seconds: float, ok: bool) -> None:
        self.wakes.append((guest, ok))

    def idle_stopped(self, guest: str) -> None:
        self.stops.append(guest)


def manager(
    routes: list[RouteConfig],
    inventory: Inventory,
    power: FakePower,
    clock: FakeClock,
    observer: Recorder | None = None,
) -> WakeManager:
    return WakeManager(
        routes,
        inventory,
        power,
        probe_factory=lambda idle, route: FakeProbe(),
        clock=clock,
        observer=observer,
        check_interval_s=0.05,
        probe_interval_s=0.01,
    )


def plain_route(ref: str) -> RouteConfig:
    return RouteConfig.model_validate({"host": f"{ref}.example.com", "guest": ref, "port": 80})


async def test_routes_to_one_guest_share_a_waker_and_plain_routes_always_pass() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki"), guest(102, "blog"))
    routes = [route("wiki"), route("101"), plain_route("blog"), route("home:101", port=8080)]
    mgr = manager(routes, inventory, FakePower(), FakeClock())
    assert mgr.gate_for(0) is mgr.gate_for(1) is mgr.gate_for(3)
    assert isinstance(mgr.gate_for(2), AlwaysReady)
    assert len(mgr.wakers) == 1
    assert mgr.wakers[0]._port == 80  # the first route's port
    mgr.tick()
    assert mgr.states() == [
        (0, WakeState.ASLEEP),
        (1, WakeState.ASLEEP),
        (2, WakeState.READY),
        (3, WakeState.ASLEEP),
    ]
    await mgr.stop()


async def test_dependencies_wake_first_in_order() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "app"), guest(102, "db"), guest(103, "cache"))
    power = FakePower()
    mgr = manager([route("app", depends_on=["db", "cache"])], inventory, power, FakeClock())
    mgr.tick()
    await mgr.gate_for(0).ready()
    assert power.calls == [("start", 102), ("start", 103), ("start", 101)]
    await mgr.stop()


async def test_a_failed_dependency_fails_the_wake_with_its_message() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "app"), guest(102, "db"))
    power = FakePower(fail={"start": "no disk"})
    mgr = manager([route("app", depends_on=["db"])], inventory, power, FakeClock())
    mgr.tick()
    with pytest.raises(WakeError) as caught:
        await mgr.gate_for(0).ready()
    assert caught.value.message == "dependency db: no disk"
    assert power.calls == [("start", 102)]
    await mgr.stop()


async def test_a_dependency_stays_awake_while_a_dependent_is_awake() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "app"), guest(102, "db"), guest(103, "cache"))
    power, clock = FakePower(), FakeClock()
    routes = [route("app", timeout=60, depends_on=["db", "cache"]), route("db", timeout=10)]
    mgr = manager(routes, inventory, power, clock)
    mgr.tick()
    app, db = mgr.gate_for(0), mgr.gate_for(1)
    await app.ready()
    running = [
        guest(v, n, status="running") for v, n in ((101, "app"), (102, "db"), (103, "cache"))
    ]
    publish(inventory, *running)
    with app.hold():
        clock.advance(3600)
        mgr.tick()
        assert db.state is WakeState.READY  # its own timeout passed, but app needs it
    clock.advance(60)
    mgr.tick()
    await wait_for(lambda: app.state is WakeState.ASLEEP, 5, "app's idle stop")
    mgr.tick()  # db's idle clock starts once app is asleep
    assert db.state is WakeState.READY
    clock.advance(10)
    mgr.tick()
    await wait_for(lambda: db.state is WakeState.ASLEEP, 5, "db's idle stop")
    # cache has no idle settings of its own: woken for app, never stopped.
    assert power.actions(103) == ["start"]
    assert power.actions(101) == ["start", "shutdown"]
    assert power.actions(102) == ["start", "shutdown"]
    await mgr.stop()


def test_a_dependency_cycle_is_refused() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "a"), guest(102, "b"))
    routes = [route("a", depends_on=["b"]), route("b", depends_on=["a"])]
    with pytest.raises(DependencyCycleError, match="cycle: a -> b -> a"):
        manager(routes, inventory, FakePower(), FakeClock())


async def test_the_background_task_follows_snapshots_and_stops_idle_guests() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki"))
    power, clock, recorder = FakePower(), FakeClock(), Recorder()
    mgr = manager(
        [route("wiki", timeout=60, stop_method="stop")], inventory, power, clock, recorder
    )
    await mgr.start()
    gate = mgr.gate_for(0)
    assert gate.state is WakeState.ASLEEP
    publish(inventory, guest(101, "wiki", status="running"))
    await wait_for(lambda: gate.state is WakeState.READY, 5, "the external start followed")
    clock.advance(60)
    await wait_for(lambda: gate.state is WakeState.ASLEEP, 5, "the idle stop")
    await gate.ready()
    assert power.actions() == ["stop", "start"]
    assert recorder.stops == ["wiki"]
    assert recorder.wakes == [("wiki", True)]
    assert mgr.stats.idle_stops == 1
    assert mgr.stats.wakes_started == 1
    assert mgr.stats.wakes_ok == 1
    await mgr.stop()
    assert mgr._task is None


async def test_stats_count_failures() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki"))
    recorder = Recorder()
    power = FakePower(fail={"start": "boom"})
    mgr = manager([route("wiki")], inventory, power, FakeClock(), recorder)
    mgr.tick()
    with pytest.raises(WakeError, match="boom"):
        await mgr.gate_for(0).ready()
    assert mgr.stats.wake_failures == 1
    assert mgr.stats.failures_by_guest == {"wiki": 1}
    assert recorder.wakes == [("wiki", False)]
    await mgr.stop()


async def test_stop_cancels_a_wake_in_flight() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki"))
    power = FakePower(gate=asyncio.Event())
    mgr = manager([route("wiki")], inventory, power, FakeClock())
    await mgr.start()
    waiter = asyncio.create_task(mgr.gate_for(0).ready())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    await mgr.stop()
    # The waiter gets an answer (a 503 for its client), not a cancellation of its own.
    with pytest.raises(WakeError, match="abandoned"):
        await waiter
    assert all(w._wake_task is None or w._wake_task.done() for w in mgr.wakers)


async def test_a_guest_missing_at_start_is_reported_and_picked_up_later() -> None:
    inventory = Inventory()
    publish(inventory, guest(102, "other"))
    mgr = manager([route("wiki")], inventory, FakePower(), FakeClock())
    await mgr.start()
    gate = mgr.gate_for(0)
    assert gate.state is WakeState.FAILED
    publish(inventory, guest(101, "wiki"), guest(102, "other"))
    await wait_for(lambda: gate.state is WakeState.ASLEEP, 5, "the guest to appear")
    await gate.ready()
    await mgr.stop()


def test_idle_settings_of_the_first_route_win() -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki"))
    routes = [route("wiki", timeout=5), route("wiki", timeout=500)]
    mgr = manager(routes, inventory, FakePower(), FakeClock())
    idle = mgr.wakers[0].idle
    assert isinstance(idle, IdleConfig)
    assert idle.timeout == 5


async def test_refs_resolve_lazily_and_one_guest_by_name_and_vmid_gets_one_waker() -> None:
    inventory, power = Inventory(), FakePower()
    mgr = manager([route("wiki"), route("101")], inventory, power, FakeClock())
    # Nothing polled yet: built from the config at once, one waker per ref.
    assert mgr.gate_for(0) is not mgr.gate_for(1)
    await mgr.start()
    publish(inventory, guest(101, "wiki"))
    await wait_for(lambda: mgr.gate_for(0) is mgr.gate_for(1), 5, "the refs to be bound")
    assert len(mgr.wakers) == 1
    assert mgr.wakers[0].routes == ["wiki.example.com", "101.example.com"]
    await mgr.gate_for(1).ready()
    assert power.actions() == ["start"]
    await mgr.stop()


async def test_wakes_on_both_refs_before_the_first_poll_start_the_guest_once() -> None:
    inventory, power = Inventory(), FakePower()
    mgr = manager([route("wiki"), route("101")], inventory, power, FakeClock())
    by_name, by_vmid = mgr.gate_for(0), mgr.gate_for(1)
    await mgr.start()
    # Both wait for the first snapshot; the second is handed over to the first's wake.
    waits = [asyncio.create_task(by_name.ready()), asyncio.create_task(by_vmid.ready())]
    await asyncio.sleep(0)
    publish(inventory, guest(101, "wiki"))
    await asyncio.gather(*waits)
    assert power.actions() == ["start"]
    assert by_vmid.state is WakeState.READY  # it answers for the guest's own waker now
    await mgr.stop()
