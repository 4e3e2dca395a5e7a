"""The proxy workers' bookkeeping, without processes: a worker's Reporter, WorkerGate and
Routing (proxy/worker.py), and the daemon's readiness() and report handling
(proxy/workers.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pxproxy.config.models import ProxyConfig, RouteConfig
from pxproxy.proxy import worker_messages as msg
from pxproxy.proxy.routes import RouteTable
from pxproxy.proxy.stats import ProxyStats
from pxproxy.proxy.upstream import GuestUnknown, NoAddress, Upstream
from pxproxy.proxy.worker import RELAYED, Reporter, Routing, WorkerGate
from pxproxy.proxy.workers import ProxyWorkers, WorkerSource, _Slot, readiness
from pxproxy.wake.contract import ALWAYS_READY, Gate, WakeState

from .conftest import routes
from .counting_gate import CountingGate as FakeGate

ROUTES = routes(
    {"host": ["Wiki.test", "wiki.alt.test"], "guest": "wiki", "port": 8080, "idle": {}},
    {"host": "*.blog.test", "guest": "blog", "port": 8080, "idle": {}},
    {"listen": "127.0.0.1:7284", "guest": "game", "port": 25565, "idle": {}},
    {"host": "plain.test", "guest": "plain", "port": 80},
)
WIKI, BLOG, GAME, PLAIN = ROUTES
UP = {
    "wiki": Upstream("lab:7281", "wiki", "127.10.28.113", 8080, "http"),
    "blog": Upstream("lab:7282", "blog", "[fd00::7282]", 8080, "http"),
    "game": Upstream("lab:7283", "game", "127.10.28.115", 25565, "http"),
    "plain": Upstream("lab:7285", "plain", "127.10.28.117", 80, "http"),
}


class Sent:
    """The reports a Reporter sent, decoded."""

    def __init__(self) -> None:
        self.reports: list[msg.Report] = []

    def __call__(self, line: bytes) -> None:
        self.reports.append(msg.report_of(msg.decode(line)))


async def one_turn() -> None:
    """Let callbacks scheduled with call_soon run (one pass of the loop runs them all)."""
    await asyncio.sleep(0)


@pytest.fixture
def sent() -> Sent:
    return Sent()


# ---------------------------------------------------------------------- Reporter, WorkerGate


async def test_first_activity_of_a_quiet_route_is_reported_at_once(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    gate = WorkerGate("wiki.test", reporter)
    gate.activity()
    assert sent.reports == []  # not from inside the request's own call
    await one_turn()
    assert [r.activity for r in sent.reports] == [{"wiki.test": 1}]
    assert reporter.activity == {}  # a flush clears what it told


async def test_later_activity_waits_for_the_tick(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    gate = WorkerGate("wiki.test", reporter)
    gate.activity()
    await one_turn()
    gate.activity()
    gate.activity()
    for _ in range(5):
        await one_turn()
    assert len(sent.reports) == 1  # the daemon knows the route is busy
    reporter.flush()  # the tick
    assert sent.reports[-1].activity == {"wiki.test": 2}
    # A tick with nothing new tells of no activity, and the route is quiet again.
    reporter.flush()
    assert sent.reports[-1].activity == {}
    gate.activity()
    await one_turn()
    assert len(sent.reports) == 4
    assert sent.reports[-1].activity == {"wiki.test": 1}


async def test_routes_touched_together_go_in_one_report(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    WorkerGate("wiki.test", reporter).activity()
    WorkerGate("*.blog.test", reporter).activity()
    await one_turn()
    assert [r.activity for r in sent.reports] == [{"wiki.test": 1, "*.blog.test": 1}]


async def test_another_routes_first_activity_is_not_held_back(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    WorkerGate("wiki.test", reporter).activity()
    await one_turn()
    WorkerGate("*.blog.test", reporter).activity()
    await one_turn()
    assert [r.activity for r in sent.reports] == [{"wiki.test": 1}, {"*.blog.test": 1}]


async def test_holds_count_up_and_down_and_an_ended_one_is_reported_once(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    gate = WorkerGate("wiki.test", reporter)
    with contextlib.ExitStack() as stack:
        stack.enter_context(gate.hold())
        assert reporter.holds == {"wiki.test": 1}
        await one_turn()  # the first news: at once
        assert sent.reports[-1].holds == {"wiki.test": 1}
        stack.enter_context(gate.hold())
        assert reporter.holds == {"wiki.test": 2}
        reporter.flush()
        assert sent.reports[-1].holds == {"wiki.test": 2}
        reporter.flush()
        assert sent.reports[-1].holds == {"wiki.test": 2}  # held: told again every tick
    assert reporter.holds == {"wiki.test": 0}
    assert reporter.activity == {"wiki.test": 2}  # each ended hold counts as activity
    reporter.flush()
    assert sent.reports[-1].holds == {"wiki.test": 0}
    assert sent.reports[-1].activity == {"wiki.test": 2}
    reporter.flush()
    assert sent.reports[-1].holds == {}  # told once, then dropped
    assert reporter.holds == {}


async def test_a_held_route_is_busy(sent: Sent) -> None:
    reporter = Reporter(ProxyStats(), sent)
    gate = WorkerGate("wiki.test", reporter)
    with gate.hold():
        await one_turn()
        reporter.flush()  # told: held, no activity
        count = len(sent.reports)
        gate.activity()
        await one_turn()
        assert len(sent.reports) == count  # the daemon already holds the guest awake
    await one_turn()
    assert len(sent.reports) == count


async def test_reports_carry_the_counters(sent: Sent) -> None:
    stats = ProxyStats()
    reporter = Reporter(stats, sent)
    stats.request("wiki.test", 200, 0.01)
    reporter.flush()
    stats.request("wiki.test", 200, 0.01)
    reporter.flush()
    # Cumulative: each report has the counters as they stand.
    assert [r.stats.routes["wiki.test"].by_status for r in sent.reports] == [
        {200: 1},
        {200: 2},
    ]


async def test_worker_gate_is_ready_and_never_waits(sent: Sent) -> None:
    gate = WorkerGate("wiki.test", Reporter(ProxyStats(), sent))
    assert gate.state is WakeState.READY
    await gate.ready()
    assert [p.state async for p in gate.progress()] == [WakeState.READY]


# ---------------------------------------------------------------------- Routing


def routing(sent: Sent) -> Routing:
    r = Routing(Reporter(ProxyStats(), sent))
    r.configure(ROUTES)
    return r


async def test_a_new_route_set_relays_everything(sent: Sent) -> None:
    r = routing(sent)
    assert r.routes == ROUTES
    assert [m.name for m in r.table.routes] == ["wiki.test", "*.blog.test", "plain.test"]
    for route in ROUTES:
        assert r.gate(route) is RELAYED
        with pytest.raises(NoAddress):
            r.get(route)


async def test_set_ready_maps_each_entry_to_its_gate(sent: Sent) -> None:
    r = routing(sent)
    r.set_ready(
        (
            msg.Direct(UP["wiki"], True),
            None,
            msg.Direct(UP["game"], True),  # a TCP route: not the HTTP proxy's to count
            msg.Direct(UP["plain"], False),
        )
    )
    wiki = r.gate(WIKI)
    assert isinstance(wiki, WorkerGate)
    assert r.get(WIKI) == UP["wiki"]
    assert r.gate(BLOG) is RELAYED
    with pytest.raises(NoAddress, match="blog"):
        r.get(BLOG)
    assert r.gate(GAME) is ALWAYS_READY
    assert r.gate(PLAIN) is ALWAYS_READY
    assert r.get(PLAIN) == UP["plain"]
    # The gate counts under the route's metrics name.
    wiki.activity()
    await one_turn()
    assert sent.reports[-1].activity == {"wiki.test": 1}


async def test_set_ready_again_moves_a_route_back_to_relaying(sent: Sent) -> None:
    r = routing(sent)
    r.set_ready((msg.Direct(UP["wiki"], True), None, None, None))
    r.set_ready((None, None, None, None))
    assert r.gate(WIKI) is RELAYED
    with pytest.raises(NoAddress):
        r.get(WIKI)


async def test_configure_forgets_the_old_readiness(sent: Sent) -> None:
    r = routing(sent)
    r.set_ready(tuple(msg.Direct(UP[route.guest], False) for route in ROUTES))
    r.configure(ROUTES)
    assert all(r.gate(route) is RELAYED for route in ROUTES)


async def test_a_route_not_in_the_set_relays(sent: Sent) -> None:
    r = routing(sent)
    r.set_ready(tuple(msg.Direct(UP[route.guest], False) for route in ROUTES))
    # An equal route, but another object: one of an older route set.
    stranger = RouteConfig.model_validate(WIKI.model_dump(exclude_unset=True))
    assert stranger == WIKI
    assert r.gate(stranger) is RELAYED
    with pytest.raises(NoAddress):
        r.get(stranger)


# ---------------------------------------------------------------------- the daemon's side


class FakeUpstreams:
    def __init__(self, known: dict[str, Upstream]) -> None:
        self.known = known

    def get(self, route: RouteConfig) -> Upstream:
        found = self.known.get(route.guest)
        if found is None:
            raise GuestUnknown(route.guest, f"no guest {route.guest!r}")
        return found


def test_readiness_per_route() -> None:
    gates: dict[str, Gate] = {
        "wiki": FakeGate(WakeState.READY),
        "blog": FakeGate(WakeState.ASLEEP),
        "game": FakeGate(WakeState.READY),
        "plain": ALWAYS_READY,
    }
    ready = readiness(ROUTES, lambda route: gates[route.guest], FakeUpstreams(UP))
    assert ready == (
        msg.Direct(UP["wiki"], True),
        None,  # asleep: the daemon wakes it
        None,  # a TCP route: no worker serves it
        msg.Direct(UP["plain"], False),
    )


@pytest.mark.parametrize(
    "state", [WakeState.ASLEEP, WakeState.WAKING, WakeState.STOPPING, WakeState.FAILED]
)
def test_readiness_of_a_guest_not_ready(state: WakeState) -> None:
    gate = FakeGate(state)
    assert readiness((WIKI,), lambda route: gate, FakeUpstreams(UP)) == (None,)


def test_readiness_without_an_address() -> None:
    ready = readiness(
        (WIKI, PLAIN), lambda route: ALWAYS_READY, FakeUpstreams({"wiki": UP["wiki"]})
    )
    assert ready == (msg.Direct(UP["wiki"], False), None)


def test_readiness_of_a_tcp_route_that_is_always_ready() -> None:
    assert readiness((GAME,), lambda route: ALWAYS_READY, FakeUpstreams(UP)) == (None,)


class Daemon:
    """The daemon's side ProxyWorkers reads: a route table, gates by route."""

    def __init__(self) -> None:
        self.table = RouteTable(ROUTES)
        self.gates = {route.guest: FakeGate() for route in ROUTES}

    def workers(self, count: int = 2) -> ProxyWorkers:
        source = WorkerSource(
            table=lambda: self.table,
            routes=lambda: ROUTES,
            gates=lambda route: self.gates[route.guest],
            upstreams=FakeUpstreams(UP),
            proxy=ProxyConfig,
            listen=lambda: None,
            tls_generation=lambda: 0,
        )
        return ProxyWorkers(count, source)


def report(
    activity: dict[str, int] | None = None,
    holds: dict[str, int] | None = None,
    stats: ProxyStats | None = None,
) -> msg.Report:
    # Through the wire format: what _report gets is what a worker's line decodes to.
    line = msg.encode_report(msg.Report(activity or {}, holds or {}, stats or ProxyStats()))
    return msg.report_of(msg.decode(line))


def test_activity_is_applied_per_route_name() -> None:
    daemon = Daemon()
    workers = daemon.workers()
    slot = _Slot(1)
    workers._report(slot, report({"wiki.test": 3, "*.blog.test": 0, "gone.test": 5}))
    # "Some" activity is one touch of the gate, however many requests it was.
    assert daemon.gates["wiki"].activities == 1
    assert daemon.gates["blog"].activities == 0
    workers._report(slot, report({"*.blog.test": 1}))
    assert (daemon.gates["wiki"].activities, daemon.gates["blog"].activities) == (1, 1)
    assert sum(g.entered for g in daemon.gates.values()) == 0


def test_a_hold_is_entered_once_while_open_and_exited_at_zero() -> None:
    daemon = Daemon()
    wiki = daemon.gates["wiki"]
    workers = daemon.workers()
    slot = _Slot(1)
    workers._report(slot, report(holds={"wiki.test": 1}))
    assert (wiki.entered, wiki.exited) == (1, 0)
    workers._report(slot, report(holds={"wiki.test": 3}))
    workers._report(slot, report(holds={"wiki.test": 2}))
    assert (wiki.entered, wiki.exited) == (1, 0)
    workers._report(slot, report(holds={"wiki.test": 0}))
    assert (wiki.entered, wiki.exited) == (1, 1)
    assert slot.holds == {}
    workers._report(slot, report(holds={"wiki.test": 0}))
    assert (wiki.entered, wiki.exited) == (1, 1)
    workers._report(slot, report(holds={"wiki.test": 1}))
    assert (wiki.entered, wiki.exited) == (2, 1)


def test_holds_of_unknown_routes_are_ignored() -> None:
    daemon = Daemon()
    workers = daemon.workers()
    slot = _Slot(1)
    workers._report(slot, report(holds={"gone.test": 2}))
    assert slot.holds == {}
    workers._report(slot, report(holds={"gone.test": 0}))
    assert sum(g.entered + g.exited for g in daemon.gates.values()) == 0


def test_each_worker_holds_for_itself() -> None:
    daemon = Daemon()
    wiki = daemon.gates["wiki"]
    workers = daemon.workers()
    one, two = workers._slots
    workers._report(one, report(holds={"wiki.test": 1}))
    workers._report(two, report(holds={"wiki.test": 4}))
    assert wiki.held == 2
    workers._report(one, report(holds={"wiki.test": 0}))
    assert wiki.held == 1
    workers._let_go(two)
    assert wiki.held == 0


def test_a_worker_that_ends_lets_go_of_all_it_held() -> None:
    daemon = Daemon()
    workers = daemon.workers()
    slot = workers._slots[0]
    workers._report(slot, report(holds={"wiki.test": 1, "*.blog.test": 2}))
    assert daemon.gates["wiki"].held == 1
    assert daemon.gates["blog"].held == 1
    slot.port, slot.listening = 8080, True
    workers._let_go(slot)
    assert all(g.held == 0 for g in daemon.gates.values())
    assert daemon.gates["wiki"].exited == 1
    assert daemon.gates["blog"].exited == 1
    assert slot.holds == {}
    assert slot.port is None
    assert not slot.listening
    workers._let_go(slot)  # twice: nothing exits twice
    assert daemon.gates["wiki"].exited == 1


def counters(requests: int, *, open_now: int = 0) -> ProxyStats:
    stats = ProxyStats()
    for _ in range(requests):
        stats.request("wiki.test", 200, 0.02)
    for _ in range(open_now):
        stats.connection_opened("wiki.test")
    return stats


def test_a_report_replaces_the_workers_counters() -> None:
    daemon = Daemon()
    workers = daemon.workers(1)
    slot = workers._slots[0]
    workers._report(slot, report(stats=counters(1)))
    workers._report(slot, report(stats=counters(3, open_now=2)))
    # Cumulative in the worker: the last report stands, it is not added to the one before.
    retired, current = workers.stats()
    assert current.routes["wiki.test"].by_status == {200: 3}
    assert current.routes["wiki.test"].open == 2
    assert retired.routes == {}


def test_an_ended_workers_counters_are_kept_without_its_connections() -> None:
    daemon = Daemon()
    workers = daemon.workers(1)
    slot = workers._slots[0]
    workers._report(slot, report(stats=counters(3, open_now=2)))
    workers._let_go(slot)
    retired, current = workers.stats()
    assert current.routes == {}
    wiki = retired.routes["wiki.test"]
    assert wiki.by_status == {200: 3}
    assert wiki.upstream_count == 3
    assert sum(wiki.buckets) == 3
    assert wiki.open == 0  # its connections ended with it
    # The worker started again, counted anew from zero, and ended again: both are kept.
    workers._report(slot, report(stats=counters(2, open_now=1)))
    workers._let_go(slot)
    retired, _ = workers.stats()
    assert retired.routes["wiki.test"].by_status == {200: 5}
    assert retired.routes["wiki.test"].open == 0


def test_names_follow_a_swapped_route_table() -> None:
    daemon = Daemon()
    workers = daemon.workers(1)
    slot = workers._slots[0]
    workers._report(slot, report({"wiki.test": 1}))
    renamed = routes({"host": "docs.test", "guest": "wiki", "port": 8080, "idle": {}})
    daemon.table = RouteTable(renamed)
    workers._report(slot, report({"wiki.test": 1, "docs.test": 1}))
    # The old name is gone with the old table; the new one reaches the gate.
    assert daemon.gates["wiki"].activities == 2
    daemon.table = RouteTable(())
    workers._report(slot, report({"docs.test": 1}))
    assert daemon.gates["wiki"].activities == 2
