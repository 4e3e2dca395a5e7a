"""The per-guest state machine with fake power, probe and clock: every rule of idle-watch."""

# The state changes behind mypy's back (awaits, other tasks), so its narrowing of `.state`
# after one assertion would flag the next one as unreachable.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import asyncio

import pytest

from pxproxy.inventory.model import Guest
from pxproxy.inventory.store import Inventory
from pxproxy.wake.contract import WakeError, WakeProgress, WakeState, WakeTimeout
from pxproxy.wake.waker import ABANDONED, OUTCOME_UNKNOWN, Waker

from ..support import wait_for
from .fakes import CLUSTER, FakeClock, FakePower, FakeProbe, guest, idle, publish


def make_waker(
    inventory: Inventory,
    power: FakePower,
    clock: FakeClock,
    probe: FakeProbe | None = None,
    ref: str = "wiki",
    **settings: object,
) -> Waker:
    waker = Waker(
        ref,
        inventory=inventory,
        power=power,
        idle=idle(**settings),
        port=80,
        probe=probe or FakeProbe(),
        clock=clock,
        probe_interval_s=0.01,
    )
    waker.observe(inventory.snapshot)
    return waker


@pytest.fixture
def inventory() -> Inventory:
    inv = Inventory()
    publish(inv, guest(101, "wiki"))
    return inv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_stopped_guest_starts_asleep_and_wakes_on_ready(
    inventory: Inventory, clock: FakeClock
) -> None:
    power, probe = FakePower(), FakeProbe()
    waker = make_waker(inventory, power, clock, probe)
    assert waker.state is WakeState.ASLEEP
    await waker.ready()
    assert waker.state is WakeState.READY
    assert power.calls == [("start", 101)]
    # Probed while the start task runs (to ask for its status early) and after it ended.
    assert probe.checks
    assert set(probe.checks) == {("10.0.0.101", 80)}
    await waker.close()
    assert probe.closed


async def test_200_concurrent_ready_calls_start_the_guest_once(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(gate=asyncio.Event())
    waker = make_waker(inventory, power, clock)
    waiters = [asyncio.create_task(waker.ready()) for _ in range(200)]
    await wait_for(lambda: power.calls == [("start", 101)], 5, "the start call")
    assert waker.state is WakeState.WAKING
    late = [asyncio.create_task(waker.ready()) for _ in range(50)]
    assert power.gate is not None
    power.gate.set()
    results = await asyncio.gather(*waiters, *late, return_exceptions=True)
    assert results == [None] * 250
    assert power.actions() == ["start"]
    assert waker.state is WakeState.READY
    await waker.close()


async def test_a_waiter_that_gives_up_does_not_cancel_the_wake(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(gate=asyncio.Event())
    waker = make_waker(inventory, power, clock)
    first = asyncio.create_task(waker.ready())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert power.gate is not None
    power.gate.set()
    await waker.ready()
    assert power.actions() == ["start"]
    await waker.close()


async def test_failed_start_opens_the_circuit_then_retries_after_cool_down(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(fail={"start": "start failed: no disk"})
    waker = make_waker(inventory, power, clock, retry_after=30)
    with pytest.raises(WakeError) as first:
        await waker.ready()
    assert first.value.message == "start failed: no disk"
    assert first.value.retry_after_s == 30
    assert waker.state is WakeState.FAILED
    assert waker.error == "start failed: no disk"
    # Inside the cool-down: refused at once, no new start.
    clock.advance(10)
    for _ in range(20):
        with pytest.raises(WakeError) as again:
            await waker.ready()
        assert again.value.message == "start failed: no disk"
        assert again.value.retry_after_s == pytest.approx(20)
    assert power.actions() == ["start"]
    # After it: the next request tries again.
    clock.advance(20)
    del power.fail["start"]
    await waker.ready()
    assert power.actions() == ["start", "start"]
    assert waker.state is WakeState.READY
    await waker.close()


async def test_wake_timeout_when_the_port_never_answers(
    inventory: Inventory, clock: FakeClock
) -> None:
    probe = FakeProbe(up=False)
    waker = make_waker(inventory, FakePower(), clock, probe, wake_timeout=0.2)
    with pytest.raises(WakeTimeout) as caught:
        await waker.ready()
    assert "not ready after 0.2s" in caught.value.message
    assert waker.state is WakeState.FAILED
    assert len(probe.checks) > 1  # polled, not tried once
    await waker.close()


async def test_wake_waits_for_an_address_from_the_inventory(
    clock: FakeClock,
) -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki", ips=()))
    probe = FakeProbe()
    waker = make_waker(inventory, FakePower(), clock, probe)
    task = asyncio.create_task(waker.ready())
    await wait_for(lambda: waker._progress.step == "waiting for an address", 5, "address wait")
    assert probe.checks == []
    publish(inventory, guest(101, "wiki", status="running", ips=("10.9.9.9",)))
    await task
    assert probe.checks == [("10.9.9.9", 80)]
    await waker.close()


async def test_health_checks_never_wake(inventory: Inventory, clock: FakeClock) -> None:
    power = FakePower()
    waker = make_waker(inventory, power, clock)
    with pytest.raises(WakeError) as caught:
        await waker.ready(wake=False)
    assert "asleep" in caught.value.message
    assert power.calls == []
    assert waker.state is WakeState.ASLEEP
    await waker.ready()
    await waker.ready(wake=False)  # a ready guest answers health checks
    await waker.close()


async def test_health_checks_do_not_count_as_activity(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=60)
    await waker.ready()
    clock.advance(59)
    await waker.ready(wake=False)
    clock.advance(2)
    waker.check_idle()
    assert waker.state is WakeState.STOPPING
    await waker.close()


async def test_idle_stop_only_after_the_timeout(inventory: Inventory, clock: FakeClock) -> None:
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=60, stop_method="stop")
    await waker.ready()
    clock.advance(59)
    waker.check_idle()
    assert waker.state is WakeState.READY
    waker.activity()  # pushes the deadline back
    clock.advance(59)
    waker.check_idle()
    assert waker.state is WakeState.READY
    clock.advance(1)
    waker.check_idle()
    assert waker.state is WakeState.STOPPING
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["start", "stop"]
    assert waker._stats.idle_stops == 1
    await waker.close()


async def test_an_open_connection_keeps_the_guest_awake(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=60)
    await waker.ready()
    with waker.hold():
        clock.advance(3600)
        waker.check_idle()
        assert waker.state is WakeState.READY
    # The idle clock starts when the connection closed.
    clock.advance(59)
    waker.check_idle()
    assert waker.state is WakeState.READY
    clock.advance(1)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["start", "shutdown"]
    await waker.close()


@pytest.mark.parametrize(
    ("method", "kind", "off", "on"),
    [
        ("shutdown", "lxc", "shutdown", "start"),
        ("shutdown", "qemu", "shutdown", "start"),
        ("stop", "lxc", "stop", "start"),
        ("stop", "qemu", "stop", "start"),
        ("suspend", "qemu", "pause", "resume"),
        ("suspend", "lxc", "pause", "resume"),
        ("hibernate", "qemu", "hibernate", "start"),
        ("hibernate", "lxc", "pause", "resume"),
    ],
)
async def test_each_stop_method_and_the_matching_wake(
    clock: FakeClock, method: str, kind: str, off: str, on: str
) -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki", kind=kind, status="running"))
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=10, stop_method=method, shutdown_timeout=42)
    assert waker.state is WakeState.READY  # running at start: ready, idle clock from now
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    # The snapshot still says "running" (it lags): our own record decides how to wake.
    await waker.ready()
    assert power.actions() == [off, on]
    if off == "shutdown":
        assert power.shutdown_timeouts == [42]
    await waker.close()


async def test_a_request_during_the_idle_stop_wakes_it_after_the_stop(
    clock: FakeClock,
) -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki", status="running"))
    power = FakePower()
    power.stop_gate = stop_gate = asyncio.Event()
    waker = make_waker(inventory, power, clock, timeout=10, stop_method="stop")
    clock.advance(10)
    waker.check_idle()
    assert waker.state is WakeState.STOPPING
    request = asyncio.create_task(waker.ready())
    await wait_for(lambda: waker.state is WakeState.WAKING, 5, "waking")
    assert power.calls == []
    stop_gate.set()
    await request
    assert power.actions() == ["stop", "start"]
    assert waker.state is WakeState.READY
    await waker.close()


async def test_a_failed_idle_stop_keeps_it_ready_and_tries_later(
    clock: FakeClock,
) -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "wiki", status="running"))
    power = FakePower(fail={"shutdown": "shutdown timeout"})
    waker = make_waker(inventory, power, clock, timeout=10)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.READY, 5, "back to ready")
    assert waker._stats.idle_stop_failures == 1
    waker.check_idle()  # not again right away
    assert power.actions() == ["shutdown"]
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: len(power.calls) == 2, 5, "the second attempt")
    await waker.close()


async def test_external_start_and_stop_are_followed(inventory: Inventory, clock: FakeClock) -> None:
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=60)
    assert waker.state is WakeState.ASLEEP
    clock.advance(1000)
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.READY
    # Its idle clock starts now, not at the last activity long ago.
    clock.advance(59)
    waker.check_idle()
    assert waker.state is WakeState.READY
    publish(inventory, guest(101, "wiki", status="stopped"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    await waker.ready()
    assert power.actions() == ["start"]
    await waker.close()


async def test_a_lagging_snapshot_does_not_undo_our_wake(
    inventory: Inventory, clock: FakeClock
) -> None:
    waker = make_waker(inventory, FakePower(), clock)
    await waker.ready()
    waker.observe(inventory.snapshot)  # still "stopped": from before our start
    assert waker.state is WakeState.READY
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)  # caught up
    publish(inventory, guest(101, "wiki", status="stopped"))
    waker.observe(inventory.snapshot)  # now a real change: stopped by someone
    assert waker.state is WakeState.ASLEEP
    await waker.close()


async def test_the_inventory_is_believed_after_the_grace_period(
    inventory: Inventory, clock: FakeClock
) -> None:
    waker = make_waker(inventory, FakePower(), clock)
    await waker.ready()
    clock.advance(31)  # the guest died right after its start and never showed running
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    await waker.close()


async def test_a_suspended_container_is_resumed_and_a_paused_vm_too(clock: FakeClock) -> None:
    inventory = Inventory()
    publish(
        inventory,
        guest(101, "ct", status="stopped", lock="suspended"),
        guest(102, "vm", kind="qemu", status="paused"),
        guest(103, "hib", kind="qemu", status="stopped", lock="suspended"),
    )
    power = FakePower()
    for ref in ("ct", "vm", "hib"):
        waker = make_waker(inventory, power, clock, ref=ref)
        assert waker.state is WakeState.ASLEEP
        await waker.ready()
        await waker.close()
    assert power.calls == [("resume", 101), ("resume", 102), ("start", 103)]


async def test_already_running_counts_as_started(inventory: Inventory, clock: FakeClock) -> None:
    power = FakePower(fail={"start": "VM 101 already running"})
    waker = make_waker(inventory, power, clock)
    await waker.ready()
    assert waker.state is WakeState.READY
    await waker.close()


async def test_progress_reports_each_step_until_ready(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(gate=asyncio.Event())
    waker = make_waker(inventory, power, clock)
    seen: list[WakeProgress] = []

    async def follow() -> None:
        async for item in waker.progress():
            seen.append(item)

    follower = asyncio.create_task(follow())
    await wait_for(lambda: len(seen) == 1, 5, "the current progress")
    wake = asyncio.create_task(waker.ready())
    assert power.gate is not None
    power.gate.set()
    await wake
    await asyncio.wait_for(follower, 5)
    assert [(p.state, p.step) for p in seen] == [
        (WakeState.ASLEEP, "asleep"),
        (WakeState.WAKING, "starting"),
        (WakeState.WAKING, "waiting for the port"),
        (WakeState.READY, "ready"),
    ]
    await waker.close()


async def test_progress_ends_with_the_error(inventory: Inventory, clock: FakeClock) -> None:
    waker = make_waker(inventory, FakePower(fail={"start": "no disk"}), clock)
    with pytest.raises(WakeError):
        await waker.ready()
    items = [p async for p in waker.progress()]
    assert items == [WakeProgress(WakeState.FAILED, "no disk", "no disk")]
    await waker.close()


async def test_a_missing_guest_fails_clearly_until_it_appears(clock: FakeClock) -> None:
    inventory = Inventory()
    publish(inventory, guest(102, "other"))
    power = FakePower()
    waker = make_waker(inventory, power, clock)
    assert waker.state is WakeState.FAILED
    with pytest.raises(WakeError) as caught:
        await waker.ready()
    assert caught.value.message == "guest 'wiki' not found in the inventory"
    assert power.calls == []
    publish(inventory, guest(101, "wiki"), guest(102, "other"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    await waker.ready()
    assert power.actions() == ["start"]
    await waker.close()


async def test_ready_before_the_first_poll_waits_for_it(clock: FakeClock) -> None:
    inventory = Inventory()
    power = FakePower()
    waker = make_waker(inventory, power, clock)
    request = asyncio.create_task(waker.ready())
    await wait_for(lambda: waker.state is WakeState.WAKING, 5, "waking")
    publish(inventory, guest(101, "wiki"))
    await request
    assert power.actions() == ["start"]
    await waker.close()


async def test_a_crash_inside_the_wake_fails_it_instead_of_hanging(
    inventory: Inventory, clock: FakeClock
) -> None:
    class Crashing(FakePower):
        async def start(self, guest: object, *, poke: asyncio.Event | None = None) -> None:
            raise RuntimeError("bug")

    waker = make_waker(inventory, Crashing(), clock)
    with pytest.raises(WakeError, match="internal error: bug"):
        await waker.ready()
    assert waker.state is WakeState.FAILED
    await waker.close()


async def test_port_answering_during_the_start_asks_for_the_task_at_once(
    inventory: Inventory, clock: FakeClock
) -> None:
    """The start task's status is polled with backoff; when the probe sees the port open the
    waker pokes the poll, and still waits for the task to end OK."""
    pokes: list[asyncio.Event] = []

    class PokedPower(FakePower):
        async def start(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
            self.calls.append(("start", guest.vmid))
            assert poke is not None
            pokes.append(poke)
            await poke.wait()  # the task "ends" only when someone asks again

    waker = make_waker(inventory, PokedPower(), clock, FakeProbe())
    await asyncio.wait_for(waker.ready(), 5)
    assert waker.state is WakeState.READY
    assert len(pokes) == 1
    assert pokes[0].is_set()


# ---------------------------------------------------------------- Proxmox gone mid-wake

LOST = "Cannot connect to host 10.1.1.1:8006 ssl:True [Connection refused]"


def poll_failed(inventory: Inventory) -> None:
    """A poll while Proxmox is away: the last data again, marked stale."""
    inventory.publish(inventory.snapshot.clusters[CLUSTER].failed(LOST))


async def test_proxmox_gone_mid_wake_then_a_poll_showing_it_running_makes_it_ready(
    inventory: Inventory, clock: FakeClock
) -> None:
    power, probe = FakePower(lost={"start": LOST}), FakeProbe(up=False)
    waker = make_waker(inventory, power, clock, probe, retry_after=30)
    with pytest.raises(WakeError) as caught:
        await waker.ready()
    assert caught.value.message == OUTCOME_UNKNOWN  # the address stays in the log
    assert waker.state is WakeState.FAILED
    # Until a poll succeeds nothing is known: stale data changes nothing, the circuit holds.
    for poll_fails in (False, True):
        if poll_fails:
            poll_failed(inventory)
        waker.observe(inventory.snapshot)
        assert waker.state is WakeState.FAILED
        with pytest.raises(WakeError, match="next poll"):
            await waker.ready()
    assert power.actions() == ["start"]
    # Proxmox is back and shows it running: ready once its port answers, with no new start.
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.WAKING
    request = asyncio.create_task(waker.ready())
    await wait_for(lambda: len(probe.checks) > 2, 5, "the readiness check")
    assert not request.done()
    probe.up = True
    await asyncio.wait_for(request, 5)
    assert waker.state is WakeState.READY
    await waker.ready()
    assert power.actions() == ["start"]
    assert waker._stats.wakes_settled == 1
    assert (waker._stats.wakes_started, waker._stats.wake_failures) == (1, 1)
    await waker.close()


async def test_proxmox_gone_mid_wake_then_a_poll_showing_it_stopped_makes_it_asleep(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(lost={"start": LOST})
    waker = make_waker(inventory, power, clock, retry_after=30)
    with pytest.raises(WakeError):
        await waker.ready()
    poll_failed(inventory)
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.FAILED
    publish(inventory, guest(101, "wiki", status="stopped"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    # Well inside retry_after: the circuit does not refuse, the next request wakes it.
    clock.advance(1)
    del power.lost["start"]
    await waker.ready()
    assert power.actions() == ["start", "start"]
    assert waker.state is WakeState.READY
    await waker.close()


async def test_a_wake_lost_right_after_an_idle_stop_is_not_hidden_by_the_stop_record(
    clock: FakeClock,
) -> None:
    """The idle stop's "expect stopped for 30 s" must not make the waker ignore the poll
    that shows the start went through after all."""
    inventory = Inventory()
    publish(inventory, guest(101, "wiki", status="running"))
    power = FakePower()
    waker = make_waker(inventory, power, clock, timeout=10, stop_method="stop")
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    clock.advance(1)
    power.lost["start"] = LOST
    with pytest.raises(WakeError):
        await waker.ready()
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    await wait_for(lambda: waker.state is WakeState.READY, 5, "ready from the poll")
    assert power.actions() == ["stop", "start"]
    await waker.close()


async def test_a_genuine_failed_start_keeps_its_circuit_whatever_the_polls_say(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(fail={"start": "start failed: no disk"})
    waker = make_waker(inventory, power, clock, retry_after=30)
    with pytest.raises(WakeError):
        await waker.ready()
    publish(inventory, guest(101, "wiki", status="stopped"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.FAILED
    clock.advance(10)
    with pytest.raises(WakeError) as caught:
        await waker.ready()
    assert caught.value.message == "start failed: no disk"
    assert caught.value.retry_after_s == pytest.approx(20)
    assert power.actions() == ["start"]
    await waker.close()


async def test_a_wake_timeout_is_not_undone_by_a_poll_showing_it_running(
    inventory: Inventory, clock: FakeClock
) -> None:
    """Running but not serving is what the timeout reported: the circuit stays open."""
    power = FakePower()
    waker = make_waker(inventory, power, clock, FakeProbe(up=False), wake_timeout=0.2)
    with pytest.raises(WakeTimeout):
        await waker.ready()
    publish(inventory, guest(101, "wiki", status="running"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.FAILED
    with pytest.raises(WakeTimeout):
        await waker.ready()
    assert power.actions() == ["start"]
    await waker.close()


async def test_a_wake_cancelled_by_close_answers_its_waiters_and_ends_the_followers(
    inventory: Inventory, clock: FakeClock
) -> None:
    power = FakePower(gate=asyncio.Event())
    waker = make_waker(inventory, power, clock)
    request = asyncio.create_task(waker.ready())
    seen: list[WakeProgress] = []

    async def follow() -> None:
        async for item in waker.progress():
            seen.append(item)

    follower = asyncio.create_task(follow())
    await wait_for(lambda: bool(power.calls), 5, "the start call")
    await waker.close()
    with pytest.raises(WakeError) as caught:
        await request
    assert caught.value.message == ABANDONED
    await asyncio.wait_for(follower, 5)
    assert seen[-1] == WakeProgress(WakeState.FAILED, ABANDONED, ABANDONED)
