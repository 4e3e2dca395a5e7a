"""What idle-watch logs, and whose doing a change was: a wake past wake_timeout that then
succeeds and a start through pxproxy's power API are pxproxy's own; only a change made
elsewhere is "outside pxproxy"."""

# The state changes behind mypy's back (awaits, other tasks), so its narrowing of `.state`
# after one assertion would flag the next one as unreachable.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import asyncio
import logging

import pytest

from pxproxy.inventory.store import Inventory
from pxproxy.wake.contract import WakeState, WakeTimeout
from pxproxy.wake.manager import WakeManager

from ..support import wait_for
from .fakes import FakeClock, FakePower, FakeProbe, guest, publish, route
from .test_waker import make_waker

LOGGER = "pxproxy.wake.waker"


@pytest.fixture
def inventory() -> Inventory:
    inv = Inventory()
    publish(inv, guest(101, "wiki"))
    return inv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def outside(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m for m in messages(caplog) if "outside pxproxy" in m]


async def test_a_wake_logs_its_start_and_ready_with_guest_route_and_duration(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    power = FakePower(gate=asyncio.Event())
    waker = make_waker(inventory, power, clock)
    waker.routes.append("wiki.test")
    request = asyncio.create_task(waker.ready())
    await wait_for(lambda: bool(power.calls), 5, "the start")
    clock.advance(2.5)
    assert power.gate is not None
    power.gate.set()
    await request
    started, ready = [r for r in caplog.records if r.name == LOGGER]
    assert (started.levelname, started.getMessage()) == ("INFO", "idle-watch: waking wiki")
    assert (ready.levelname, ready.getMessage()) == ("INFO", "idle-watch: wiki ready after 2.50s")
    assert (ready.__dict__["guest"], ready.__dict__["route"]) == ("wiki", "wiki.test")
    assert ready.__dict__["duration_s"] == 2.5
    await waker.close()


async def test_a_failed_wake_is_a_warning_with_the_proxmox_message(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    waker = make_waker(inventory, FakePower(fail={"start": "CT 101: no such storage"}), clock)
    with pytest.raises(Exception, match="no such storage"):
        await waker.ready()
    (failed,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        failed.getMessage() == "idle-watch: waking wiki failed after 0.00s: CT 101: no such storage"
    )
    assert failed.__dict__["error"] == "CT 101: no such storage"
    await waker.close()


async def test_an_idle_stop_is_logged_with_its_method(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    waker = make_waker(inventory, FakePower(), clock, timeout=60, stop_method="stop")
    await waker.ready()
    clock.advance(61)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    (stopped,) = [r for r in caplog.records if "idle for" in r.getMessage()]
    assert stopped.getMessage() == "idle-watch: wiki idle for 60s: stop, now stopped"
    assert (stopped.levelname, stopped.__dict__["method"]) == ("INFO", "stop")
    await waker.close()


async def test_a_wake_past_wake_timeout_that_then_succeeds_is_ours_not_outside(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    probe = FakeProbe(up=False)
    waker = make_waker(inventory, FakePower(), clock, probe, wake_timeout=0.2, retry_after=600)
    with pytest.raises(WakeTimeout):
        await waker.ready()
    assert waker.state is WakeState.FAILED
    # The start went on in Proxmox: the guest runs and, a little later, serves.
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.FAILED  # running but not serving is not ready
    probe.up = True
    await wait_for(lambda: waker.state is WakeState.READY, 5, "ready after the timeout")
    assert any("past its wake_timeout of 0.2s" in m for m in messages(caplog))
    waker.observe(inventory.snapshot)
    assert outside(caplog) == []
    await waker.ready()  # the circuit is closed: no refusal, no second start
    await waker.close()


async def test_a_start_through_the_power_api_is_not_outside(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    waker = make_waker(inventory, FakePower(), clock)
    waker.note_power_action("start")
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.READY
    waker.note_power_action("shutdown")
    publish(inventory, guest(101, "wiki", status="stopped"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    assert messages(caplog) == [
        "idle-watch: wiki is running (started through pxproxy's power API)",
        "idle-watch: wiki is stopped (stopped through pxproxy's power API)",
    ]
    await waker.close()


async def test_a_start_made_elsewhere_is_outside(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    waker = make_waker(inventory, FakePower(), clock)
    waker.note_power_action("start")
    clock.advance(31)  # a note of the API's is good for the sync grace only
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.READY
    assert outside(caplog) == ["idle-watch: wiki is running (started outside pxproxy)"]
    await waker.close()


async def test_a_power_api_start_right_after_an_idle_stop_is_believed_at_once(
    inventory: Inventory, clock: FakeClock
) -> None:
    """Our stop left a record that would make a "running" snapshot look stale for 30s."""
    waker = make_waker(inventory, FakePower(), clock, timeout=60)
    await waker.ready()
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    clock.advance(61)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    waker.note_power_action("start")
    waker.observe(inventory.snapshot)  # running: the API's start, not a stale view
    assert waker.state is WakeState.READY
    await waker.close()


async def test_the_manager_finds_the_waker_of_a_guest(
    inventory: Inventory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    publish(inventory, guest(101, "wiki"), guest(102, "blog"))
    mgr = WakeManager(
        [route("wiki"), route("102")],
        inventory,
        FakePower(),
        probe_factory=lambda idle, route: FakeProbe(),
        clock=clock,
    )
    assert [w.routes for w in mgr.wakers] == [["wiki.example.com"], ["102.example.com"]]
    mgr.tick()
    waker = mgr.waker_for(guest(101, "wiki"))
    assert waker is not None
    waker.note_power_action("start")
    publish(inventory, guest(101, "wiki", status="running"), guest(102, "blog", status="running"))
    mgr.tick()
    assert messages(caplog) == [
        "idle-watch: wiki is running (started through pxproxy's power API)",
        "idle-watch: 102 is running (started outside pxproxy)",
    ]
    await mgr.stop()
