"""Idle-watch rebuilt after a restart: the store's records, the snapshot, status/current."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from pxproxy.inventory.model import GuestType
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveConnectionError
from pxproxy.pve.models import GuestStatus, parse_guest_status
from pxproxy.state.store import Circuit, SavedState, Sleep
from pxproxy.wake.contract import WakeError, WakeState
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.waker import Waker

from ..support import wait_for
from .fakes import CLUSTER, FakeClock, FakePower, FakeProbe, guest, publish, route

KEY = f"{CLUSTER}:qemu/201"


@dataclass
class FakeStatus:
    """status/current of VM 201: paused or not; `down` raises as an unreachable Proxmox."""

    paused: bool = True
    down: bool = False
    asked: list[int] = field(default_factory=list)

    async def guest_status(self, kind: GuestType, node: str, vmid: int) -> GuestStatus:
        self.asked.append(vmid)
        await asyncio.sleep(0)
        if self.down:
            raise PveConnectionError("connection refused")
        qmp = "paused" if self.paused else "running"
        return parse_guest_status({"vmid": vmid, "status": "running", "qmpstatus": qmp})


def state_of(waker: Waker) -> WakeState:
    """The state, read afresh (mypy would narrow a repeated `waker.state`)."""
    return waker.state


def running_vm(inventory: Inventory, uptime: int = 3600) -> None:
    publish(inventory, guest(201, "vm", kind="qemu", status="running")._replace(uptime=uptime))


async def started(
    inventory: Inventory,
    power: FakePower,
    saved: SavedState,
    status: FakeStatus,
    clock: FakeClock,
    wall: FakeClock,
    stop_method: str = "suspend",
) -> Waker:
    manager = WakeManager(
        [route("vm", stop_method=stop_method, timeout=600)],
        inventory,
        power,
        probe_factory=lambda i, r: FakeProbe(),
        clock=clock,
    )
    waker = manager.wakers[0]
    waker._wall = wall  # the store's times are wall-clock ones
    await manager.start(saved, status={CLUSTER: status})
    await manager.stop()  # the background loop is not needed: tick() ran once in start()
    return waker


async def test_a_paused_vm_is_asleep_and_resumed_not_suspended_again() -> None:
    inventory, power, clock, wall = Inventory(), FakePower(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory)
    saved = SavedState(sleeps={KEY: Sleep("paused", 49_000.0)})
    waker = await started(inventory, power, saved, FakeStatus(paused=True), clock, wall)
    assert (waker.state, waker._progress.step) == (WakeState.ASLEEP, "paused")
    waker.check_idle()
    assert power.actions() == []
    await waker.ready()
    assert power.actions() == ["resume"]


async def test_status_current_beats_a_missing_record_and_a_stale_one() -> None:
    inventory, clock, wall = Inventory(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory)
    # No record (the file was lost): qmpstatus alone says paused.
    waker = await started(inventory, FakePower(), SavedState(), FakeStatus(), clock, wall)
    assert waker.state is WakeState.ASLEEP
    # A record that says paused, but someone resumed the VM while pxproxy was away.
    saved = SavedState(sleeps={KEY: Sleep("paused", 49_000.0)})
    waker = await started(inventory, FakePower(), saved, FakeStatus(paused=False), clock, wall)
    assert waker.state is WakeState.READY
    assert waker.persisted() == (KEY, None, None)


async def test_without_an_answer_the_record_holds() -> None:
    inventory, clock, wall = Inventory(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory)
    saved = SavedState(sleeps={KEY: Sleep("paused", 49_000.0)})
    status = FakeStatus(down=True)
    waker = await started(inventory, FakePower(), saved, status, clock, wall)
    assert status.asked == [201]
    assert waker.state is WakeState.ASLEEP


async def test_status_current_is_asked_only_for_running_vms_on_suspend_routes() -> None:
    inventory, clock, wall = Inventory(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory)
    status = FakeStatus()
    waker = await started(inventory, FakePower(), SavedState(), status, clock, wall, "shutdown")
    assert status.asked == []
    assert waker.state is WakeState.READY


async def test_an_open_circuit_is_restored_until_its_wall_clock_expiry() -> None:
    inventory, power, clock, wall = Inventory(), FakePower(), FakeClock(), FakeClock(50_000.0)
    publish(inventory, guest(201, "vm", kind="qemu"))
    saved = SavedState(circuits={KEY: Circuit("startup failed", False, 50_020.0)})
    waker = await started(inventory, power, saved, FakeStatus(), clock, wall)
    assert waker.state is WakeState.FAILED
    assert waker.persisted() == (KEY, None, Circuit("startup failed", False, 50_020.0))
    with pytest.raises(WakeError, match="startup failed") as refused:
        await waker.ready()
    assert refused.value.retry_after_s == 20.0
    assert power.actions() == []
    clock.advance(21)
    await waker.ready()
    assert power.actions() == ["start"]


async def test_an_expired_circuit_is_not_restored() -> None:
    inventory, clock, wall = Inventory(), FakeClock(), FakeClock(50_000.0)
    publish(inventory, guest(201, "vm", kind="qemu"))
    saved = SavedState(circuits={KEY: Circuit("startup failed", False, 49_999.0)})
    waker = await started(inventory, FakePower(), saved, FakeStatus(), clock, wall)
    assert waker.state is WakeState.ASLEEP


async def test_the_idle_clock_goes_on_from_the_saved_activity() -> None:
    inventory, power, clock, wall = Inventory(), FakePower(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory, uptime=3600)
    # Idle for 500 s before the restart; the route's timeout is 600 s.
    saved = SavedState(activity={"vm.example.com": 49_500.0})
    waker = await started(inventory, power, saved, FakeStatus(paused=False), clock, wall)
    assert waker.state is WakeState.READY
    clock.advance(99)
    waker.check_idle()
    assert waker.state is WakeState.READY
    clock.advance(2)
    waker.check_idle()
    assert state_of(waker) is WakeState.STOPPING
    await waker.close()


async def test_the_idle_clock_never_starts_before_the_guest_did() -> None:
    inventory, clock, wall = Inventory(), FakeClock(), FakeClock(50_000.0)
    running_vm(inventory, uptime=10)  # started 10 s ago, outside pxproxy
    saved = SavedState(activity={"vm.example.com": 40_000.0})
    waker = await started(inventory, FakePower(), saved, FakeStatus(paused=False), clock, wall)
    clock.advance(589)
    waker.check_idle()
    assert waker.state is WakeState.READY


async def test_a_guest_that_appears_after_start_still_gets_its_records() -> None:
    """Refs resolve lazily: a VM the first poll does not show is restored (status/current
    asked) when it appears, and the next request resumes it instead of suspending it again."""
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    manager = WakeManager(
        [route("vm", stop_method="suspend", timeout=600)],
        inventory,
        power,
        probe_factory=lambda i, r: FakeProbe(),
        clock=clock,
        check_interval_s=0.01,
    )
    status = FakeStatus(paused=True)
    saved = SavedState(sleeps={KEY: Sleep("paused", 49_000.0)})
    await manager.start(saved, status={CLUSTER: status})
    waker = manager.wakers[0]
    assert status.asked == []  # nothing to ask about yet
    running_vm(inventory)
    await wait_for(lambda: waker._progress.step == "paused", 5, "the late VM to be restored")
    assert (status.asked, waker.state) == ([201], WakeState.ASLEEP)
    await waker.ready()
    assert power.actions() == ["resume"]
    await manager.stop()


async def test_saved_activity_is_kept_for_a_guest_not_found_yet() -> None:
    """Until a waker's guest appears its own idle clock is only its construction time: what
    it saves meanwhile is the activity the last run left, not "now"."""
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    manager = WakeManager(
        [route("vm", stop_method="suspend", timeout=600)],
        inventory,
        power,
        probe_factory=lambda i, r: FakeProbe(),
        clock=clock,
    )
    saved = SavedState(activity={"vm.example.com": 49_500.0})
    await manager.start(saved, status={CLUSTER: FakeStatus(paused=False)})
    try:
        assert manager.records().activity == {"vm.example.com": 49_500.0}
    finally:
        await manager.stop()
