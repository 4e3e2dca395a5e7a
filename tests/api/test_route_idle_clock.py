"""The idle clock of /api/v1/routes: when the guest was last used and the seconds until
idle-watch stops it, for the dashboard's countdown."""

from __future__ import annotations

from pxproxy.api.handlers.routes import _idle_clock
from pxproxy.inventory.store import Inventory
from pxproxy.wake.contract import ALWAYS_READY, WakeState
from pxproxy.wake.waker import Waker

from ..wake.fakes import FakeClock, FakePower, FakeProbe, guest, idle, publish


def waker(inventory: Inventory, clock: FakeClock, status: str = "running") -> Waker:
    publish(inventory, guest(7385, "clock7385", status=status))
    w = Waker(
        "clock7385",
        inventory=inventory,
        power=FakePower(),
        idle=idle(timeout=600),
        port=80,
        probe=FakeProbe(),
        clock=clock,
        # The wall clock the API compares with is fixed too: no real time in the answer.
        wall=lambda: 50_000.0 + clock(),
    )
    w.observe(inventory.snapshot)
    return w


async def test_a_ready_guest_counts_down_to_its_idle_stop() -> None:
    clock = FakeClock()
    w = waker(Inventory(), clock)
    await w.ready()
    assert w.state is WakeState.READY
    w.activity()
    used = 50_000.0 + clock()
    clock.advance(100)
    now = 50_000.0 + clock()
    assert _idle_clock(w, now) == {
        "last_activity_at": round(used, 3),
        "idle_stop_in_s": 500.0,
        "busy": False,
        "wake_error": None,
    }
    # An open connection holds it: no countdown while it lasts.
    with w.hold():
        held = _idle_clock(w, now)
        assert (held["idle_stop_in_s"], held["busy"]) == (None, True)
    await w.close()


async def test_an_asleep_guest_and_a_route_without_idle_do_not_count() -> None:
    clock = FakeClock()
    w = waker(Inventory(), clock, status="stopped")
    assert w.state is WakeState.ASLEEP
    assert _idle_clock(w, 50_000.0)["idle_stop_in_s"] is None
    assert _idle_clock(ALWAYS_READY, 50_000.0) == {
        "last_activity_at": None,
        "idle_stop_in_s": None,
        "busy": False,
        "wake_error": None,
    }
    await w.close()
