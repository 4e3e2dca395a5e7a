from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from pxproxy.config.models import IpPolicy
from pxproxy.inventory.address_policy import AddressPolicy
from pxproxy.inventory.ip_resolution import (
    EMPTY_RETRY_S,
    FAILURE_RETRY_START_S,
    IpResolver,
)
from pxproxy.inventory.model import Guest, GuestType
from pxproxy.pve.errors import (
    PveError,
    PveNodeUnreachableError,
    PveNotImplementedError,
    PveServerError,
)

from ..builders import make_guest

REFRESH_S = 300.0
Answer = object  # a JSON answer, or a PveError to raise


class FakeSource:
    """Answers per vmid; records every call as (kind, vmid)."""

    def __init__(self) -> None:
        self.lxc: dict[int, Answer] = {}
        self.agent: dict[int, Answer] = {}
        self.config: dict[int, Answer] = {}
        self.calls: list[tuple[str, int]] = []

    @staticmethod
    def _answer(table: dict[int, Answer], vmid: int, default: object) -> object:
        value = table.get(vmid, default)
        if isinstance(value, PveError):
            raise value
        return value

    async def lxc_interfaces(self, node: str, vmid: int) -> object:
        self.calls.append(("interfaces", vmid))
        return self._answer(self.lxc, vmid, None)

    async def qemu_agent_interfaces(self, node: str, vmid: int) -> object:
        self.calls.append(("agent", vmid))
        return self._answer(self.agent, vmid, {"result": []})

    async def guest_config(self, kind: GuestType, node: str, vmid: int) -> dict[str, object]:
        self.calls.append(("config", vmid))
        answer = self._answer(self.config, vmid, {})
        assert isinstance(answer, dict)
        return answer

    def count(self, kind: str, vmid: int) -> int:
        return Counter(self.calls)[(kind, vmid)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def lxc_ifaces(*cidrs: str) -> list[dict[str, object]]:
    """An /interfaces answer (PVE 8.1 shape) with lo plus eth0 holding the given addresses."""
    entries: list[dict[str, object]] = [
        {"name": "lo", "inet": "127.0.0.1/8", "inet6": "::1/128", "hwaddr": "00:00:00:00:00:00"}
    ]
    for i, cidr in enumerate(cidrs):
        key = "inet6" if ":" in cidr else "inet"
        entries.append({"name": f"eth{i}", key: cidr, "hwaddr": "bc:24:11:89:67:07"})
    return entries


def agent_ifaces(*addrs: str) -> dict[str, object]:
    return {
        "result": [
            {
                "name": "lo",
                "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4"}],
            },
            {
                "name": "ens18",
                "hardware-address": "bc:24:11:aa:bb:cc",
                "ip-addresses": [
                    {
                        "ip-address": a,
                        "ip-address-type": "ipv6" if ":" in a else "ipv4",
                        "prefix": 64 if ":" in a else 24,
                    }
                    for a in addrs
                ],
            },
        ]
    }


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(source: FakeSource, clock: Clock) -> IpResolver:
    return IpResolver(source, refresh_s=REFRESH_S, clock=clock)


async def cycle(resolver: IpResolver, *guests: Guest) -> list[str]:
    """One poll cycle: plan, resolve the due guests; the ids that were due."""
    due = resolver.plan(guests)
    await resolver.resolve(due)
    return [g.id for g in due]


# ----------------------------------------------------------------- what is asked when


async def test_new_guests_resolved_once_then_steady_state_asks_nobody(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    web = make_guest(101, "web")
    vm = make_guest(102, "vm", kind="qemu")
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    source.agent[102] = agent_ifaces("10.0.0.6")
    assert await cycle(resolver, web, vm) == ["lxc/101", "qemu/102"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")
    assert resolver.addresses("qemu/102") == (("10.0.0.6",), "agent")
    calls = len(source.calls)
    assert calls == 2
    for _ in range(20):
        clock.advance(3)
        assert await cycle(resolver, web, vm) == []
    assert len(source.calls) == calls
    assert resolver.stats.resolved == 2


async def test_status_change_triggers(resolver: IpResolver, source: FakeSource) -> None:
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    source.config[101] = {"net0": "name=eth0,bridge=vmbr0,ip=10.0.0.5/24"}
    await cycle(resolver, make_guest(101, status="running", uptime=50))
    assert await cycle(resolver, make_guest(101, status="stopped", uptime=0)) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "config")
    assert await cycle(resolver, make_guest(101, status="stopped", uptime=0)) == []
    assert await cycle(resolver, make_guest(101, status="running", uptime=1)) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")


async def test_uptime_going_backwards_triggers(resolver: IpResolver, source: FakeSource) -> None:
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, make_guest(101, uptime=5000))
    assert await cycle(resolver, make_guest(101, uptime=5003)) == []
    source.lxc[101] = lxc_ifaces("10.0.0.77/24")
    # Rebooted between two polls: still running, but uptime restarted.
    assert await cycle(resolver, make_guest(101, uptime=4)) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.77",), "interfaces")


async def test_refresh_after_spread_interval(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    guests = [make_guest(1000 + i) for i in range(60)]
    for g in guests:
        source.lxc[g.vmid] = lxc_ifaces(f"10.1.{g.vmid % 250}.1/24")
    assert len(await cycle(resolver, *guests)) == 60
    start = clock.now
    clock.now = start + REFRESH_S * 0.749
    assert await cycle(resolver, *guests) == []
    clock.now = start + REFRESH_S
    some = await cycle(resolver, *guests)
    assert 0 < len(some) < 60  # spread: not all at once
    clock.now = start + REFRESH_S * 1.25
    rest = await cycle(resolver, *guests)
    assert sorted(some + rest) == sorted(g.id for g in guests)


async def test_refresh_notices_new_address(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    guest = make_guest(101)
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, guest)
    source.lxc[101] = lxc_ifaces("10.0.0.99/24")
    clock.advance(REFRESH_S * 1.25)
    plan = resolver.plan([guest])
    assert await resolver.resolve(plan) is True
    assert resolver.addresses("lxc/101") == (("10.0.0.99",), "interfaces")
    clock.advance(REFRESH_S * 1.25)
    assert await resolver.resolve(resolver.plan([guest])) is False  # unchanged


async def test_running_guest_without_address_yet_is_asked_again_soon(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    guest = make_guest(101)
    source.lxc[101] = lxc_ifaces()  # DHCP not done: only lo
    await cycle(resolver, guest)
    assert resolver.addresses("lxc/101") == ((), None)
    clock.advance(EMPTY_RETRY_S - 0.1)
    assert await cycle(resolver, guest) == []
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    clock.advance(0.1)
    assert await cycle(resolver, guest) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")


async def test_disappeared_guests_are_forgotten(resolver: IpResolver, source: FakeSource) -> None:
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, make_guest(101), make_guest(102))
    await cycle(resolver, make_guest(102))
    assert resolver.addresses("lxc/101") == ((), None)
    # Back again (e.g. migrated in): treated as new.
    assert await cycle(resolver, make_guest(101)) == ["lxc/101"]


# ----------------------------------------------------------------- failures


async def test_failure_keeps_addresses_and_backs_off(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    guest = make_guest(101)
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, guest)
    source.lxc[101] = PveServerError("got timeout", status=500)
    clock.advance(REFRESH_S * 1.25)
    assert await cycle(resolver, guest) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")
    assert resolver.stats.failures == 1
    # First retry not before FAILURE_RETRY_START_S, the next one not before twice that.
    for backoff in (FAILURE_RETRY_START_S, 2 * FAILURE_RETRY_START_S, 4 * FAILURE_RETRY_START_S):
        clock.advance(backoff - 0.01)
        assert await cycle(resolver, guest) == []
        clock.advance(0.01)
        assert await cycle(resolver, guest) == ["lxc/101"]
        assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")
    assert resolver.stats.failures == 4
    # Recovery resets the backoff: next time is a normal refresh.
    source.lxc[101] = lxc_ifaces("10.0.0.6/24")
    clock.advance(8 * FAILURE_RETRY_START_S)
    assert await cycle(resolver, guest) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.6",), "interfaces")
    clock.advance(REFRESH_S * 0.7)
    assert await cycle(resolver, guest) == []


async def test_backoff_is_capped_at_refresh(source: FakeSource, clock: Clock) -> None:
    resolver = IpResolver(source, refresh_s=10.0, clock=clock)
    guest = make_guest(101)
    source.lxc[101] = PveNodeUnreachableError("no route to host", status=595)
    await cycle(resolver, guest)
    for _ in range(8):  # 3, 6, then capped at 10
        clock.advance(10.0)
        assert await cycle(resolver, guest) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == ((), None)


async def test_failing_guest_does_not_hold_back_others(
    resolver: IpResolver, source: FakeSource
) -> None:
    source.lxc[101] = PveServerError("boom", status=500)
    source.lxc[102] = lxc_ifaces("10.0.0.2/24")
    assert await resolver.resolve(resolver.plan([make_guest(101), make_guest(102)])) is True
    assert resolver.addresses("lxc/102") == (("10.0.0.2",), "interfaces")
    assert resolver.addresses("lxc/101") == ((), None)


# ----------------------------------------------------------------- never asked


async def test_templates_never_resolved(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    template = make_guest(9000, "tmpl", kind="qemu", status="stopped", template=True)
    for _ in range(3):
        assert await cycle(resolver, template) == []
        clock.advance(REFRESH_S * 2)
    assert source.calls == []


async def test_unknown_status_never_resolved_and_addresses_kept(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, make_guest(101, uptime=500))
    calls = len(source.calls)
    offline = make_guest(101, status="unknown", uptime=0)
    for _ in range(3):  # a long outage: the refresh falls due meanwhile
        clock.advance(REFRESH_S)
        assert await cycle(resolver, offline) == []
    assert len(source.calls) == calls
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")
    # Back and still running: the overdue refresh happens now, once.
    assert await cycle(resolver, make_guest(101, uptime=500 + 3 * int(REFRESH_S))) == ["lxc/101"]


async def test_short_outage_asks_nothing_when_node_returns(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    await cycle(resolver, make_guest(101, uptime=500))
    for _ in range(5):
        clock.advance(3)
        assert await cycle(resolver, make_guest(101, status="unknown", uptime=0)) == []
    clock.advance(3)
    assert await cycle(resolver, make_guest(101, uptime=518)) == []
    assert source.calls == [("interfaces", 101)]
    # The node rebooted instead: the guest's uptime restarted, so it is asked.
    assert await cycle(resolver, make_guest(101, uptime=7)) == ["lxc/101"]


async def test_guest_first_seen_on_offline_node_is_not_asked(
    resolver: IpResolver, source: FakeSource
) -> None:
    offline = make_guest(101, status="unknown", uptime=0)
    assert await cycle(resolver, offline) == []
    assert await cycle(resolver, offline) == []
    assert source.calls == []
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    assert await cycle(resolver, make_guest(101, status="running", uptime=9)) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "interfaces")


# ----------------------------------------------------------------- LXC


async def test_lxc_501_falls_back_to_config_and_stops_asking(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.lxc[101] = PveNotImplementedError("Method 'GET ...' not implemented", status=501)
    source.lxc[102] = PveNotImplementedError("Method 'GET ...' not implemented", status=501)
    source.config[101] = {"net0": "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,ip6=fd00::5/64"}
    source.config[102] = {"net0": "name=eth0,bridge=vmbr0,ip=dhcp"}
    await cycle(resolver, make_guest(101))
    assert resolver.addresses("lxc/101") == (("10.0.0.5", "fd00::5"), "config")
    assert resolver.stats.failures == 0
    await cycle(resolver, make_guest(101), make_guest(102))
    clock.advance(REFRESH_S * 2)
    await cycle(resolver, make_guest(101), make_guest(102))
    assert source.count("interfaces", 101) == 1
    assert source.count("interfaces", 102) == 0
    assert source.count("config", 101) == 2
    assert source.count("config", 102) >= 1


async def test_lxc_without_runtime_address_reads_config(
    resolver: IpResolver, source: FakeSource
) -> None:
    source.lxc[101] = lxc_ifaces()  # only lo
    source.config[101] = {"net0": "name=eth0,ip=10.0.0.5/24"}
    await cycle(resolver, make_guest(101))
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "config")
    assert source.calls == [("interfaces", 101), ("config", 101)]


async def test_stopped_lxc_reads_config_only(resolver: IpResolver, source: FakeSource) -> None:
    source.config[101] = {"net0": "name=eth0,ip=10.0.0.5/24"}
    await cycle(resolver, make_guest(101, status="stopped", uptime=0))
    assert resolver.addresses("lxc/101") == (("10.0.0.5",), "config")
    assert source.calls == [("config", 101)]


async def test_stopped_dhcp_guest_keeps_last_seen_addresses(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.lxc[101] = lxc_ifaces("192.168.3.95/22")
    source.config[101] = {"net0": "name=eth0,bridge=vmbr0,ip=dhcp,ip6=auto"}
    await cycle(resolver, make_guest(101, uptime=100))
    assert resolver.addresses("lxc/101") == (("192.168.3.95",), "interfaces")
    stopped = make_guest(101, status="stopped", uptime=0)
    assert await cycle(resolver, stopped) == ["lxc/101"]
    assert resolver.addresses("lxc/101") == (("192.168.3.95",), "last-seen")
    clock.advance(REFRESH_S * 2)
    await cycle(resolver, stopped)
    assert resolver.addresses("lxc/101") == (("192.168.3.95",), "last-seen")


async def test_stopped_dhcp_guest_never_seen_running_has_no_address(
    resolver: IpResolver, source: FakeSource
) -> None:
    source.config[101] = {"net0": "name=eth0,ip=dhcp"}
    await cycle(resolver, make_guest(101, status="stopped", uptime=0))
    assert resolver.addresses("lxc/101") == ((), None)


# ----------------------------------------------------------------- QEMU


async def test_qemu_without_agent_falls_back_to_cloud_init_and_stops_asking(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.agent[100] = PveServerError("No QEMU guest agent configured", status=500)
    source.config[100] = {
        "ipconfig0": "ip=10.0.0.10/24,gw=10.0.0.1",
        "net0": "virtio=BC:24:11:AA:BB:CC",
    }
    vm = make_guest(100, kind="qemu", uptime=100)
    await cycle(resolver, vm)
    assert resolver.addresses("qemu/100") == (("10.0.0.10",), "config")
    assert resolver.stats.failures == 0
    for _ in range(3):
        clock.advance(REFRESH_S * 2)
        await cycle(resolver, vm._replace(uptime=vm.uptime + 1000))
    assert source.count("agent", 100) == 1
    assert source.count("config", 100) == 4
    # A restart (uptime going backwards) may come with an agent: ask again.
    source.agent[100] = agent_ifaces("10.0.0.11")
    assert await cycle(resolver, vm._replace(uptime=5)) == ["qemu/100"]
    assert source.count("agent", 100) == 2
    assert resolver.addresses("qemu/100") == (("10.0.0.11",), "agent")


async def test_qemu_agent_not_running_is_asked_again(
    resolver: IpResolver, source: FakeSource, clock: Clock
) -> None:
    source.agent[100] = PveServerError("QEMU guest agent is not running", status=500)
    source.config[100] = {"ipconfig0": "ip=dhcp"}
    vm = make_guest(100, kind="qemu")
    await cycle(resolver, vm)
    assert resolver.addresses("qemu/100") == ((), None)
    source.agent[100] = agent_ifaces("10.0.0.12", "fe80::1%6")
    clock.advance(EMPTY_RETRY_S)
    assert await cycle(resolver, vm) == ["qemu/100"]
    assert resolver.addresses("qemu/100") == (("10.0.0.12",), "agent")
    assert source.count("agent", 100) == 2


async def test_stopped_qemu_never_asks_agent(resolver: IpResolver, source: FakeSource) -> None:
    source.config[100] = {"ipconfig0": "ip=10.0.0.10/24", "ipconfig1": "ip6=fd00::10/64"}
    await cycle(resolver, make_guest(100, kind="qemu", status="stopped", uptime=0))
    assert source.calls == [("config", 100)]
    assert resolver.addresses("qemu/100") == (("10.0.0.10", "fd00::10"), "config")


async def test_qemu_other_errors_are_failures(resolver: IpResolver, source: FakeSource) -> None:
    source.agent[100] = PveNodeUnreachableError("no route to host", status=595)
    await cycle(resolver, make_guest(100, kind="qemu"))
    assert resolver.stats.failures == 1
    assert ("config", 100) not in source.calls


# ----------------------------------------------------------------- policy


async def test_default_policy_drops_loopback_and_link_local(
    resolver: IpResolver, source: FakeSource
) -> None:
    source.lxc[101] = lxc_ifaces("192.168.3.95/22", "fe80::be24:11ff:fe89:6707/64")
    source.agent[102] = agent_ifaces("169.254.1.1", "10.0.0.2", "fd00::2", "fe80::2%6")
    await cycle(resolver, make_guest(101), make_guest(102, kind="qemu"))
    assert resolver.addresses("lxc/101") == (("192.168.3.95",), "interfaces")
    assert resolver.addresses("qemu/102") == (("10.0.0.2", "fd00::2"), "agent")


async def test_policy_families_and_networks(source: FakeSource, clock: Clock) -> None:
    policy = AddressPolicy(
        IpPolicy(families=("ipv4",), include=("10.0.0.0/8",), exclude=("10.9.0.0/16",))
    )
    resolver = IpResolver(source, policy=policy, refresh_s=REFRESH_S, clock=clock)
    source.agent[102] = agent_ifaces("172.17.0.1", "10.9.0.1", "fd00::2", "10.0.0.2")
    await cycle(resolver, make_guest(102, kind="qemu"))
    assert resolver.addresses("qemu/102") == (("10.0.0.2",), "agent")


async def test_policy_filtering_everything_falls_back_to_config(
    source: FakeSource, clock: Clock
) -> None:
    policy = AddressPolicy(IpPolicy(families=("ipv6",)))
    resolver = IpResolver(source, policy=policy, refresh_s=REFRESH_S, clock=clock)
    source.lxc[101] = lxc_ifaces("10.0.0.5/24")
    source.config[101] = {"net0": "name=eth0,ip=10.0.0.5/24,ip6=fd00::5/64"}
    await cycle(resolver, make_guest(101))
    assert resolver.addresses("lxc/101") == (("fd00::5",), "config")


# ----------------------------------------------------------------- concurrency


async def test_concurrency_is_bounded(clock: Clock) -> None:
    limit = 3
    release = asyncio.Event()
    saturated = asyncio.Event()
    in_flight = 0
    peak = 0

    class SlowSource(FakeSource):
        async def lxc_interfaces(self, node: str, vmid: int) -> object:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == limit:
                saturated.set()
            try:
                await release.wait()
            finally:
                in_flight -= 1
            return lxc_ifaces(f"10.0.1.{vmid % 250}/24")

    resolver = IpResolver(SlowSource(), concurrency=limit, refresh_s=REFRESH_S, clock=clock)
    guests = [make_guest(200 + i) for i in range(10)]
    task = asyncio.create_task(resolver.resolve(resolver.plan(guests)))
    # Every lookup task is already queued ahead of this waiter: without the bound all ten
    # would be in flight by the time it resumes.
    await asyncio.wait_for(saturated.wait(), 5)
    assert (in_flight, peak) == (limit, limit)
    release.set()
    assert await asyncio.wait_for(task, 5) is True
    assert peak == limit
    assert all(resolver.addresses(g.id)[0] for g in guests)
