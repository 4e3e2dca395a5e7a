"""idle.before_stop with fake commands, power and clock: the command, then the grace, then the
stop; activity during either keeps the guest up; a failing command still lets the stop come."""

# The state changes behind mypy's back (awaits, other tasks), so its narrowing of `.state`
# after one assertion would flag the next one as unreachable.
# mypy: disable-error-code="comparison-overlap"

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pytest

from pxproxy.inventory.model import Guest
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveError
from pxproxy.pve.termproxy import ShellTimeoutError
from pxproxy.wake import before_stop
from pxproxy.wake.before_stop import BeforeStopProgress, CommandError, GuestCommands
from pxproxy.wake.contract import WakeState
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.waker import Waker

from ..support import wait_for
from .fakes import FakeClock, FakePower, FakeProbe, guest, idle, publish, route

ARGV = ["rcon-cli", "say", "Server stops in 60 s"]
LOGGER = "pxproxy.wake.before_stop"


class Output(NamedTuple):
    exit_status: int
    output: str


@dataclass
class FakeCommands:
    """Records each run with the power calls made before it; `gate` holds a run until set,
    `fail` raises instead of answering, `hang` never answers."""

    power: FakePower
    exit_status: int = 0
    output: str = "[Server] Server stops in 60 s\n"
    fail: Exception | None = None
    gate: asyncio.Event | None = None
    hang: bool = False
    runs: list[tuple[int, tuple[str, ...], float, list[str]]] = field(default_factory=list)
    finished: int = 0
    cancelled: int = 0

    async def run(self, guest: Guest, argv: Sequence[str], *, timeout_s: float) -> Output:
        self.runs.append((guest.vmid, tuple(argv), timeout_s, self.power.actions()))
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.hang:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        if self.fail is not None:
            raise self.fail
        return Output(self.exit_status, self.output)


def make_waker(
    inventory: Inventory,
    power: FakePower,
    clock: FakeClock,
    commands: GuestCommands | None,
    *,
    grace: float = 60,
    command_timeout: float = 5,
    kind: str = "lxc",
) -> Waker:
    publish(inventory, guest(101, "mc", kind=kind, status="running"))
    settings = {"exec": ARGV, "grace": grace, "timeout": command_timeout}
    waker = Waker(
        "mc",
        inventory=inventory,
        power=power,
        idle=idle(timeout=10, before_stop=settings),
        port=25565,
        probe=FakeProbe(),
        clock=clock,
        probe_interval_s=0.01,
        commands=commands,
    )
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.READY  # running: ready, its idle clock from now
    return waker


def in_grace(waker: Waker) -> bool:
    progress = waker.before_stop
    return progress is not None and progress.step == "grace"


async def until_grace(waker: Waker) -> None:
    await wait_for(lambda: in_grace(waker), 5, "the command's end")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def power() -> FakePower:
    return FakePower()


async def test_the_command_runs_then_the_grace_passes_then_the_guest_stops(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power)
    waker = make_waker(Inventory(), power, clock, commands, grace=60, command_timeout=5)
    clock.advance(9)
    waker.check_idle()
    assert commands.runs == []
    assert waker.before_stop is None
    clock.advance(1)
    waker.check_idle()
    await until_grace(waker)
    # The command ran first, with its own timeout, before any power action.
    assert commands.runs == [(101, tuple(ARGV), 5.0, [])]
    assert waker.before_stop == BeforeStopProgress("grace", 60.0)
    assert waker.state is WakeState.READY  # it serves during the grace: players may rejoin
    clock.advance(59)
    waker.check_idle()
    assert waker.before_stop == BeforeStopProgress("grace", 1.0)
    assert power.calls == []
    clock.advance(1)
    waker.check_idle()
    assert waker.state is WakeState.STOPPING
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["shutdown"]
    assert len(commands.runs) == 1
    stats = waker._stats
    assert (stats.before_stops, stats.before_stop_failures, stats.before_stops_abandoned) == (
        1,
        0,
        0,
    )
    assert stats.idle_stops == 1
    await waker.close()


async def test_the_command_step_shows_until_it_ends(clock: FakeClock, power: FakePower) -> None:
    commands = FakeCommands(power, gate=asyncio.Event())
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: len(commands.runs) == 1, 5, "the command")
    assert waker.before_stop == BeforeStopProgress("command", None)
    clock.advance(3600)  # however long the command takes, the grace counts from its end
    waker.check_idle()
    assert power.calls == []
    assert commands.gate is not None
    commands.gate.set()
    await until_grace(waker)
    assert waker.before_stop == BeforeStopProgress("grace", 60.0)
    await waker.close()


async def test_a_request_during_the_grace_keeps_the_guest_up(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power)
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    clock.advance(30)
    await waker.ready()  # a request: the proxy asks the gate, which is ready
    waker.check_idle()
    assert waker.before_stop is None
    assert waker._stats.before_stops_abandoned == 1
    # The grace would have ended here: nothing is stopped, and the idle clock starts again
    # from the request.
    clock.advance(30)
    waker.check_idle()
    assert power.calls == []
    assert len(commands.runs) == 1
    assert waker.state is WakeState.READY
    # Idle again for the whole timeout: the next before_stop, not a stop.
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: len(commands.runs) == 2, 5, "the second before_stop")
    assert power.calls == []
    await waker.close()


async def test_an_open_connection_during_the_grace_keeps_the_guest_up(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power)
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    with waker.hold():  # a player reconnects (a TCP or UDP session)
        clock.advance(3600)
        waker.check_idle()
        assert waker.before_stop is None
    assert waker._stats.before_stops_abandoned == 1
    assert waker.busy_checks == 1
    assert power.calls == []
    assert waker.state is WakeState.READY
    await waker.close()


async def test_activity_while_the_command_runs_keeps_the_guest_up(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power, gate=asyncio.Event())
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: len(commands.runs) == 1, 5, "the command")
    clock.advance(1)
    waker.activity()
    waker.check_idle()
    assert waker.before_stop is None
    assert waker._stats.before_stops_abandoned == 1
    assert commands.gate is not None
    commands.gate.set()  # the command ends after all: no grace, no stop follows it
    await wait_for(lambda: commands.finished == 1, 5, "the command's end")
    clock.advance(9)
    waker.check_idle()
    assert power.calls == []
    assert waker.before_stop is None
    await waker.close()


@pytest.mark.parametrize(
    ("commands_kw", "logged"),
    [
        ({"exit_status": 1, "output": "rcon: connection refused"}, "exited 1"),
        ({"fail": PveError("No QEMU guest agent configured")}, "No QEMU guest agent"),
        ({"fail": CommandError("argv[0] must name a command")}, "must name a command"),
        ({"fail": ShellTimeoutError("the command did not finish within 5s")}, "within 5s"),
        ({"fail": RuntimeError("a bug")}, "internal error"),
    ],
)
async def test_a_failing_command_is_logged_and_the_stop_still_comes(
    clock: FakeClock,
    power: FakePower,
    caplog: pytest.LogCaptureFixture,
    commands_kw: dict[str, object],
    logged: str,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    commands = FakeCommands(power, **commands_kw)  # type: ignore[arg-type]
    waker = make_waker(Inventory(), power, clock, commands, grace=20)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    assert waker._stats.before_stop_failures == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(logged in m and "stopping in 20s all the same" in m for m in warnings), warnings
    clock.advance(20)  # the grace is kept all the same: the stop comes when it was announced
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["shutdown"]
    await waker.close()


async def test_a_command_that_never_answers_is_given_up(
    clock: FakeClock, power: FakePower, monkeypatch: pytest.MonkeyPatch
) -> None:
    # idle-watch's own bound (the command's timeout plus a margin), for an exec path that
    # would not keep its timeout; the margin is taken away to keep the test short.
    monkeypatch.setattr(before_stop, "COMMAND_MARGIN_S", 0.0)
    commands = FakeCommands(power, hang=True)
    waker = make_waker(Inventory(), power, clock, commands, command_timeout=0.05)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    assert commands.cancelled == 1
    assert waker._stats.before_stop_failures == 1
    clock.advance(60)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["shutdown"]
    await waker.close()


async def test_without_an_exec_path_the_stop_comes_after_the_grace(
    clock: FakeClock, power: FakePower, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    waker = make_waker(Inventory(), power, clock, None, grace=5)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    assert "no exec path" in caplog.text
    clock.advance(5)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert power.actions() == ["shutdown"]
    await waker.close()


async def test_a_grace_of_zero_stops_right_after_the_command(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power, output="Saved the game\n")  # `save-all`, then the stop
    waker = make_waker(Inventory(), power, clock, commands, grace=0)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    waker.check_idle()
    await wait_for(lambda: waker.state is WakeState.ASLEEP, 5, "the idle stop")
    assert [r[3] for r in commands.runs] == [[]]
    assert power.actions() == ["shutdown"]
    await waker.close()


@pytest.mark.parametrize("during", ["command", "grace"])
async def test_closing_the_waker_ends_the_before_stop_without_a_stop(
    clock: FakeClock, power: FakePower, during: str
) -> None:
    commands = FakeCommands(power, gate=asyncio.Event() if during == "command" else None)
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await wait_for(lambda: len(commands.runs) == 1, 5, "the command")
    if during == "grace":
        await until_grace(waker)
    tasks = set(waker._command_tasks)
    await waker.close()  # pxproxy stopping
    assert all(t.done() for t in tasks)
    assert waker._command_tasks == set()
    assert commands.cancelled == (1 if during == "command" else 0)
    assert waker.before_stop is None
    clock.advance(3600)
    waker.check_idle()
    assert power.calls == []


async def test_a_stop_through_the_api_during_the_grace_ends_it(
    clock: FakeClock, power: FakePower
) -> None:
    inventory = Inventory()
    commands = FakeCommands(power)
    waker = make_waker(inventory, power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    # What PowerService does after sending the stop itself.
    waker.slept_by_api("stop", guest(101, "mc", status="running"))
    assert waker.state is WakeState.ASLEEP
    assert waker.before_stop is None
    clock.advance(60)
    waker.check_idle()
    assert power.calls == []  # idle-watch sends no second stop
    await waker.close()


async def test_a_reboot_through_the_api_during_the_grace_abandons_it(
    clock: FakeClock, power: FakePower
) -> None:
    commands = FakeCommands(power)
    waker = make_waker(Inventory(), power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    waker.note_power_action("reboot")
    assert waker.before_stop is None
    assert waker._stats.before_stops_abandoned == 1
    clock.advance(9)  # idle again from the reboot on
    waker.check_idle()
    assert power.calls == []
    assert len(commands.runs) == 1
    await waker.close()


async def test_a_guest_stopped_outside_during_the_grace_is_let_be(
    clock: FakeClock, power: FakePower
) -> None:
    inventory = Inventory()
    commands = FakeCommands(power)
    waker = make_waker(inventory, power, clock, commands)
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    publish(inventory, guest(101, "mc", status="stopped"))  # someone shut it down in the UI
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.ASLEEP
    assert waker.before_stop is None
    clock.advance(60)
    waker.check_idle()
    assert power.calls == []
    await waker.close()


async def test_a_stopped_guest_runs_no_command(clock: FakeClock, power: FakePower) -> None:
    # The snapshot shows it stopped while the waker still thinks it up (our record wins for
    # SYNC_GRACE_S): the command is not even tried, and the stop comes as announced.
    inventory = Inventory()
    commands = FakeCommands(power)
    waker = make_waker(inventory, power, clock, commands, grace=1)
    waker._expect("running")
    publish(inventory, guest(101, "mc", status="stopped"))
    waker.observe(inventory.snapshot)
    assert waker.state is WakeState.READY
    clock.advance(10)
    waker.check_idle()
    await until_grace(waker)
    assert commands.runs == []
    assert waker._stats.before_stop_failures == 1
    await waker.close()


async def test_the_manager_hands_its_commands_to_each_waker(
    clock: FakeClock, power: FakePower
) -> None:
    inventory = Inventory()
    publish(inventory, guest(101, "mc", kind="qemu", status="running"))
    commands = FakeCommands(power)
    mgr = WakeManager(
        [route("mc", 25565, timeout=10, before_stop={"exec": ARGV, "grace": 30})],
        inventory,
        power,
        probe_factory=lambda idle, route: FakeProbe(),
        clock=clock,
        check_interval_s=0.05,
        commands=commands,
    )
    await mgr.start()
    try:
        waker = mgr.gate_for(0)
        assert isinstance(waker, Waker)
        clock.advance(10)
        await wait_for(lambda: in_grace(waker), 5, "the before_stop through the manager")
        assert commands.runs == [(101, tuple(ARGV), 30.0, [])]  # the default timeout: 30s
        clock.advance(30)
        await wait_for(lambda: power.actions() == ["shutdown"], 5, "the idle stop")
        assert mgr.stats.before_stops == 1
        assert mgr.stats.idle_stops == 1
    finally:
        await mgr.stop()


def test_before_stop_counters_are_in_prometheus() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pxproxy.wake.stats import BeforeStopCollector, WakeStats

    stats = WakeStats(before_stops=3, before_stop_failures=1, before_stops_abandoned=2)
    registry = CollectorRegistry()
    registry.register(BeforeStopCollector(lambda: stats))
    text = generate_latest(registry).decode()
    assert 'pxproxy_before_stops_total{result="started"} 3.0' in text
    assert 'pxproxy_before_stops_total{result="failed"} 1.0' in text
    assert 'pxproxy_before_stops_total{result="abandoned"} 2.0' in text
    stats.before_stops += 1  # read at scrape time, not copied
    assert 'result="started"} 4.0' in generate_latest(registry).decode()
