"""The producers on their real sources: the inventory's publishes, idle-watch's news (a
WakeManager with fake power, probe and clock) and the route store."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from pxproxy.api.models import EVENTS
from pxproxy.config.models import RouteConfig
from pxproxy.events import producers
from pxproxy.events.hub import Event, EventHub, Subscription
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.routing.route_set import RouteStore
from pxproxy.wake.contract import WakeProgress, WakeState
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.news import IdleEvent, WakeNews
from pxproxy.wake.waker import Waker

from ..support import wait_for
from ..wake.fakes import FakeClock, FakePower, FakeProbe, guest, idle, publish, route


def drain(sub: Subscription) -> list[Event]:
    """What is queued now, without waiting."""
    queue = sub._queue
    out = []
    while not queue.empty():
        event = queue.get_nowait()
        if event is not None:
            out.append(event)
    return out


async def test_each_publish_makes_poll_and_stats_and_guest_changes() -> None:
    hub, inventory = EventHub(), Inventory()
    producers.connect(hub, inventory, WakeManager([], inventory, FakePower()).news, RouteStore())
    sub = hub.subscribe()
    publish(inventory, guest(101, "wiki", status="running"))
    assert [e.kind for e in drain(sub)] == ["poll", "stats", "guests"]
    publish(inventory, guest(101, "wiki", status="running"))  # the same again
    assert [e.kind for e in drain(sub)] == ["poll", "stats"]
    publish(inventory)  # wiki gone
    (*_, gone) = drain(sub)
    assert (gone.kind, gone.data["removed"]) == ("guests", ["home:101"])


async def test_a_listener_that_raises_does_not_fail_the_publish() -> None:
    inventory = Inventory()

    def broken(before: ClusterSnapshot | None, after: ClusterSnapshot) -> None:
        raise RuntimeError("boom")

    seen: list[str] = []
    inventory.on_publish(broken)
    inventory.on_publish(lambda before, after: seen.append(after.name))
    publish(inventory, guest(101, "wiki"))
    assert seen == ["home"]
    assert inventory.snapshot.clusters["home"].guests


async def test_no_reader_no_work() -> None:
    hub, inventory = EventHub(), Inventory()
    inventory.on_publish(producers.InventoryEvents(hub))
    publish(inventory, guest(101, "wiki"))
    assert hub.published == 0


async def test_route_set_changes_publish_routes() -> None:
    hub, store = EventHub(), RouteStore()
    store.on_change(producers.RouteEvents(hub, clock=lambda: 42.0))
    sub = hub.subscribe()
    plain = RouteConfig.model_validate({"host": "a.example.com", "guest": "wiki", "port": 80})
    assert store.publish([plain], ())
    assert not store.publish([plain], ())  # unchanged: no event
    assert [(e.kind, dict(e.data)) for e in drain(sub)] == [("routes", {"at": 42.0})]


async def test_a_wake_then_an_idle_stop_as_events_naming_cluster_vmid() -> None:
    hub, inventory, clock, power = EventHub(), Inventory(), FakeClock(), FakePower()
    publish(inventory, guest(101, "wiki"))
    mgr = WakeManager(
        [route("wiki", timeout=10)],
        inventory,
        power,
        probe_factory=lambda idle, r: FakeProbe(),
        clock=clock,
        check_interval_s=0.05,
        probe_interval_s=0.01,
    )
    producers.connect(hub, inventory, mgr.news, RouteStore())
    await mgr.start()
    sub = hub.subscribe()
    try:
        waking = asyncio.ensure_future(mgr.gate_for(0).ready())
        await wait_for(lambda: power.actions() == ["start"], 5, "the start")
        publish(inventory, guest(101, "wiki", status="running"))
        await asyncio.wait_for(waking, 5)
        wakes = [e for e in drain(sub) if e.kind == "wake"]
        assert next(e.data["state"] for e in wakes) == "waking"
        assert wakes[-1].data["state"] == "ready"
        assert {e.guest for e in wakes} == {"home:101"}
        assert wakes[0].data["routes"] == ["wiki.example.com"]
        assert set(wakes[0].data) == {"guest", "routes", "state", "step", "error", "at"}
        clock.advance(11)
        mgr.tick()
        await wait_for(lambda: mgr.gate_for(0).state is WakeState.ASLEEP, 5, "the idle stop")
        events = drain(sub)
        idle = [e for e in events if e.kind == "idle"]
        assert [(e.guest, e.data["event"]) for e in idle] == [("home:101", "idle_stop")]
        assert idle[0].data["detail"] == "shutdown, now stopped"
        states = [e.data["state"] for e in events if e.kind == "wake"]
        assert states == ["stopping", "asleep"]
        for event in [*wakes, *events]:
            EVENTS[event.kind].model_validate_json(event.json())  # as the OpenAPI says
    finally:
        await mgr.stop()


class Recorder:
    """A WakeListener that keeps what it is told."""

    def __init__(self) -> None:
        self.idle: list[tuple[str, str, str | None]] = []
        self.states: list[str] = []

    def wake_changed(self, ref: str, routes: Sequence[str], progress: WakeProgress) -> None:
        self.states.append(progress.state.value)

    def idle_event(self, ref: str, event: IdleEvent, detail: str | None) -> None:
        self.idle.append((ref, event, detail))


@dataclass
class Commands:
    exit_status: int = 0

    async def run(self, guest: Guest, argv: Sequence[str], *, timeout_s: float) -> Any:
        return SimpleNamespace(exit_status=self.exit_status, output="bye\n")


def before_stop_waker(news: WakeNews, power: FakePower, clock: FakeClock, exit_status: int) -> Any:
    inventory = Inventory()
    publish(inventory, guest(101, "mc", status="running"))
    waker = Waker(
        "mc",
        inventory=inventory,
        power=power,
        idle=idle(timeout=10, before_stop={"exec": ["say", "bye"], "grace": 5, "timeout": 5}),
        port=25565,
        probe=FakeProbe(),
        clock=clock,
        probe_interval_s=0.01,
        commands=Commands(exit_status),
        news=news,
    )
    waker.observe(inventory.snapshot)
    return waker


async def test_before_stop_outcomes_and_a_failed_idle_stop_are_news() -> None:
    news, recorder, clock = WakeNews(), Recorder(), FakeClock()
    news.listen(recorder)
    power = FakePower(fail={"shutdown": "VM is locked (backup)"})
    waker = before_stop_waker(news, power, clock, exit_status=3)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: bool(recorder.idle), 5, "the before_stop's end")
    assert recorder.idle == [("mc", "before_stop", "exit 3")]  # its output only in the log
    clock.advance(5)
    waker.check_idle()
    await wait_for(lambda: len(recorder.idle) == 2, 5, "the idle stop's failure")
    ref, event, detail = recorder.idle[1]
    assert (ref, event) == ("mc", "idle_stop_failed")
    assert detail is not None
    assert "VM is locked (backup)" in detail
    assert recorder.states[-2:] == ["stopping", "ready"]
    await waker.close()


async def test_use_during_the_grace_is_before_stop_abandoned() -> None:
    news, recorder, clock = WakeNews(), Recorder(), FakeClock()
    news.listen(recorder)
    waker = before_stop_waker(news, FakePower(), clock, exit_status=0)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: bool(recorder.idle), 5, "the before_stop's end")
    assert recorder.idle == [("mc", "before_stop", "exit 0")]
    clock.advance(1)
    waker.activity()
    waker.check_idle()
    assert [e for _, e, _ in recorder.idle] == ["before_stop", "before_stop_abandoned"]
    await waker.close()


async def test_a_listener_that_raises_does_not_stop_the_others() -> None:
    news, recorder = WakeNews(), Recorder()

    class Broken(Recorder):
        def idle_event(self, ref: str, event: IdleEvent, detail: str | None) -> None:
            raise RuntimeError("boom")

    news.listen(Broken())
    news.listen(recorder)
    news.idle_event("mc", "idle_stop", "stop, now stopped")
    assert recorder.idle == [("mc", "idle_stop", "stop, now stopped")]
