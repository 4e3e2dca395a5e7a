"""The real WakeManager with a fake clock: a guest on a `traffic` route stays awake while its
counters grow, and is stopped `idle.timeout` after they stop, without any sleeping."""

from __future__ import annotations

from pxproxy.config.companion import TraefikOptions
from pxproxy.config.models import RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.wake.activity import ActivityWatch
from pxproxy.wake.contract import WakeState
from pxproxy.wake.manager import WakeManager

from ...support import wait_for
from ..fakes import FakeClock, FakePower, FakeProbe, guest, publish
from .fakes import ScriptedFetch, store

TIMEOUT_S = 60.0
POLL_S = 10.0  # pvestatd's refresh, about

ROUTE = RouteConfig.model_validate(
    {
        "listen": "127.0.0.1:0",
        "guest": "game",
        "port": 25565,
        "idle": {"timeout": TIMEOUT_S, "stop_method": "stop"},
        "activity": {"source": "traffic", "threshold": 4096},
    }
)


async def test_growing_counters_keep_the_guest_awake_and_idle_stops_it_after() -> None:
    inventory, power, clock = Inventory(), FakePower(), FakeClock()
    total = 1_000_000

    def poll(grow: int) -> None:
        nonlocal total
        total += grow
        running = guest(202, "game", status="running")._replace(netin=total, uptime=int(clock()))
        publish(inventory, running)

    poll(0)
    manager = WakeManager(
        [ROUTE], inventory, power, probe_factory=lambda idle, route: FakeProbe(), clock=clock
    )
    watch = ActivityWatch(
        store(ROUTE),
        inventory,
        manager.gate_for,
        TraefikOptions,
        clock=clock,
        fetch=ScriptedFetch(),
    )
    gate = manager.gate_for(ROUTE)
    manager.tick()
    watch.observe_traffic(inventory.snapshot)
    assert gate.state is WakeState.READY

    # Five idle timeouts of traffic, the proxy never involved: never stopped.
    for _ in range(int(5 * TIMEOUT_S / POLL_S)):
        clock.advance(POLL_S)
        poll(50_000)
        watch.observe_traffic(inventory.snapshot)
        manager.tick()
        assert gate.state is WakeState.READY
    assert watch.stats.signalled == {"tcp:127.0.0.1:0": 30}

    # Traffic ends (only a trickle below the threshold): stopped once idle.timeout has passed
    # since the last growth, and not one poll before.
    last_growth = clock()
    while clock() - last_growth < TIMEOUT_S - POLL_S:
        clock.advance(POLL_S)
        poll(1_000)
        watch.observe_traffic(inventory.snapshot)
        manager.tick()
        assert gate.state is WakeState.READY
    assert power.calls == []
    clock.advance(POLL_S)
    poll(1_000)
    watch.observe_traffic(inventory.snapshot)
    manager.tick()
    assert clock() - last_growth == TIMEOUT_S
    assert gate.state in (WakeState.STOPPING, WakeState.ASLEEP)
    await wait_for(lambda: power.actions() == ["stop"], 5, "the idle stop")
    await manager.stop()
    await watch.stop()
