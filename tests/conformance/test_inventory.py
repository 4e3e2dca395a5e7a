"""The inventory against fakepve: node pool, resources, IP resolution for every source,
incremental polling, and faults (offline node, unreachable API)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.model import Guest
from pxproxy.inventory.poller import ClusterPoller
from pxproxy.inventory.store import Inventory

from ..fakes import TestPve
from ..support import Pki, cluster_config, wait_for

LXC_84 = [
    {"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"},
    {
        "name": "eth0",
        "hwaddr": "bc:24:11:89:67:07",
        "hardware-address": "bc:24:11:89:67:07",
        "inet": "192.168.3.96/22",
        "inet6": "fe80::be24:11ff:fe89:6707/64",
        "ip-addresses": [
            {"ip-address-type": "inet", "ip-address": "192.168.3.95", "prefix": "22"},
            {"ip-address-type": "inet", "ip-address": "192.168.3.96", "prefix": "22"},
            {"ip-address-type": "inet6", "ip-address": "2001:db8::95", "prefix": "64"},
            {"ip-address-type": "inet6", "ip-address": "fe80::be24:11ff:fe89:6707", "prefix": "64"},
        ],
    },
]
LXC_81 = [
    {"inet": "127.0.0.1/8", "hwaddr": "00:00:00:00:00:00", "name": "lo", "inet6": "::1/128"},
    {
        "inet6": "fe80::be24:11ff:fe89:6707/64",
        "name": "eth0",
        "hwaddr": "bc:24:11:89:67:07",
        "inet": "192.168.3.95/22",
    },
]
AGENT = [
    {
        "name": "lo",
        "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}],
    },
    {
        "name": "Ethernet",
        "ip-addresses": [
            {"ip-address": "fe80::5d2c:1%6", "ip-address-type": "ipv6", "prefix": 64},
            {"ip-address": "203.0.113.20", "ip-address-type": "ipv4", "prefix": 24},
            {"ip-address": "2001:db8::20", "ip-address-type": "ipv6", "prefix": 64},
        ],
    },
]


@pytest.fixture
async def inventory() -> Inventory:
    return Inventory()


class Clock:
    """Resolution time the test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def polling(
    pve: TestPve, pki: Pki, inventory: Inventory, clock: Clock | None = None, **overrides: object
) -> AsyncIterator[ClusterPoller]:
    poller, client = make_poller(
        "home",
        cluster_config(pve, pki, **overrides),
        inventory,
        _config(pve, pki),
        None,
        clock or Clock(),
    )
    try:
        yield poller
    finally:
        await client.close()


def _config(pve: TestPve, pki: Pki) -> Config:
    return Config(proxmox=(cluster_config(pve, pki),))


def guest(inventory: Inventory, vmid: int) -> Guest:
    (found,) = inventory.snapshot.lookup_ref(f"home:{vmid}").guests
    return found


def populate(pve: TestPve) -> None:
    pve.add_node("pve2")
    pve.add_ct(101, "static", status="stopped", config={"net0": "name=eth0,ip=10.0.0.11/24"})
    pve.add_ct(102, "dhcp84", status="running", config={"net0": "name=eth0,ip=dhcp"})
    pve.interfaces_override[102] = LXC_84
    pve.add_ct(103, "dhcp81", status="running", config={"net0": "name=eth0,ip=dhcp"})
    pve.interfaces_override[103] = LXC_81
    pve.add_ct(
        104,
        "v6only",
        status="running",
        node="pve2",
        config={"net0": "name=eth0,ip=manual,ip6=2001:db8::104/64"},
    )
    pve.add_ct(105, "stopped-dhcp", status="stopped", config={"net0": "name=eth0,ip=dhcp"})
    vm = pve.add_vm(200, "win", status="running")
    vm.agent = {"interfaces": AGENT}
    pve.add_vm(201, "cloudinit", status="running", config={"ipconfig0": "ip=10.0.1.201/24"})
    pve.add_vm(
        202,
        "stopped-ci",
        status="stopped",
        config={"ipconfig0": "ip=10.0.1.202/24,gw=10.0.1.1", "ipconfig1": "ip6=2001:db8:1::202/64"},
    )
    pve.add_vm(203, "tmpl", status="stopped", template=True, config={"ipconfig0": "ip=10.9.9.9/24"})


async def test_every_address_source(pve: TestPve, pki: Pki, inventory: Inventory) -> None:
    populate(pve)
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
    expected = {
        101: (("10.0.0.11",), "config"),
        102: (("192.168.3.95", "192.168.3.96", "2001:db8::95"), "interfaces"),
        103: (("192.168.3.95",), "interfaces"),
        104: (("2001:db8::104",), "interfaces"),
        105: ((), None),
        200: (("203.0.113.20", "2001:db8::20"), "agent"),
        201: (("10.0.1.201",), "config"),
        202: (("10.0.1.202", "2001:db8:1::202"), "config"),
        203: ((), None),
    }
    for vmid, (ips, source) in expected.items():
        g = guest(inventory, vmid)
        assert (g.ips, g.ip_source) == (ips, source), vmid
    assert guest(inventory, 203).template
    # Stopped guests are read from their config, never asked for live addresses.
    assert pve.count("/lxc/101/interfaces") == 0
    assert pve.count("/lxc/105/interfaces") == 0
    assert pve.count("/qemu/202/agent/network-get-interfaces") == 0
    assert pve.count("/qemu/203/config") == 0  # templates are not resolved


async def test_nodes_and_reverse_lookup(pve: TestPve, pki: Pki, inventory: Inventory) -> None:
    populate(pve)
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
    snap = inventory.snapshot
    assert [n.name for n in snap.nodes] == ["pve1", "pve2"]
    assert all(n.ip for n in snap.nodes)
    assert snap.lookup_ip("2001:DB8::95").guests[0].vmid == 102
    assert snap.lookup_ip(snap.nodes[1].ip or "").nodes[0].name == "pve2"
    assert snap.lookup_host("win.example.com").guests[0].vmid == 200
    assert snap.clusters["home"].pve_cluster_name == "fakecluster"


async def test_steady_state_costs_one_request(pve: TestPve, pki: Pki, inventory: Inventory) -> None:
    populate(pve)
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
        before = len(pve.requests)
        for _ in range(5):
            await poller.poll_once()
        after = len(pve.requests)
    assert after - before == 5
    assert all(p.endswith("/cluster/resources") for _, p, _ in pve.requests[before:])


async def test_started_guest_is_resolved_on_next_poll(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    ct = pve.add_ct(101, "late", status="stopped", config={"net0": "name=eth0,ip=dhcp"})
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
        assert guest(inventory, 101).ips == ()
        ct.status = "running"
        pve.interfaces_override[101] = LXC_81
        await poller.poll_once()
    assert guest(inventory, 101).ips == ("192.168.3.95",)


async def test_pve7_without_interfaces_falls_back_to_config(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    pve.add_ct(101, "old", status="running", config={"net0": "name=eth0,ip=10.0.0.11/24"})
    pve.add_ct(102, "old2", status="running", config={"net0": "name=eth0,ip=10.0.0.12/24"})
    pve.fail("GET", "/lxc/101/interfaces", 501, "Method 'GET /nodes/pve1/lxc/101/interfaces' x")
    pve.fail("GET", "/lxc/102/interfaces", 501, "Method 'GET /nodes/pve1/lxc/102/interfaces' x")
    clock = Clock()
    async with polling(pve, pki, inventory, clock) as poller:
        await poller.poll_once()
        asked = pve.count("/interfaces")
        clock.now += 3600  # every refresh is due
        await poller.poll_once()
    assert guest(inventory, 101).ips == ("10.0.0.11",)
    assert guest(inventory, 102).ips == ("10.0.0.12",)
    assert asked >= 1
    assert pve.count("/interfaces") == asked  # never asked again once it answered 501


async def test_qemu_without_agent_configured_uses_cloud_init(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    pve.add_vm(300, "noagent", status="running", config={"ipconfig0": "ip=10.0.3.1/24"})
    pve.fail("GET", "/qemu/300/agent/network-get-interfaces", 500, "No QEMU guest agent configured")
    clock = Clock()
    async with polling(pve, pki, inventory, clock) as poller:
        await poller.poll_once()
        clock.now += 3600
        await poller.poll_once()
    g = guest(inventory, 300)
    assert (g.ips, g.ip_source) == (("10.0.3.1",), "config")
    assert pve.count("/qemu/300/agent/network-get-interfaces") == 1


async def test_one_node_offline_rest_keeps_updating(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    populate(pve)
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
        pve.set_node_offline("pve2")
        pve.ct(102).status = "stopped"
        await poller.poll_once()
        snap = inventory.snapshot
    offline = guest(inventory, 104)
    assert offline.status == "unknown"
    assert offline.ips == ("2001:db8::104",)  # kept from before
    assert guest(inventory, 102).status == "stopped"  # pve1 keeps updating
    assert {n.name: n.status for n in snap.nodes} == {"pve1": "online", "pve2": "offline"}
    assert snap.clusters["home"].ok


async def test_flaky_address_lookup_keeps_previous(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    pve.add_ct(102, "dhcp", status="running", config={"net0": "name=eth0,ip=dhcp"})
    pve.interfaces_override[102] = LXC_81
    clock = Clock()
    async with polling(pve, pki, inventory, clock) as poller:
        await poller.poll_once()
        pve.fail("GET", "/lxc/102/interfaces", 596, "Connection timed out")
        clock.now += 3600
        await poller.poll_once()
    assert pve.count("/lxc/102/interfaces") == 2  # asked again, failed
    assert guest(inventory, 102).ips == ("192.168.3.95",)


async def test_unreachable_api_marks_stale_and_recovers(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    pve.add_ct(101, "wiki", status="running", config={"net0": "name=eth0,ip=10.0.0.11/24"})
    async with polling(pve, pki, inventory) as poller:
        task = asyncio.create_task(poller.run())
        try:
            await inventory.wait_until(lambda s: bool(s.guests and s.guests[0].ips), 5)
            await pve.stop()
            stale = await inventory.wait_until(lambda s: not s.clusters["home"].ok, 5)
            cs = stale.clusters["home"]
            assert cs.error is not None
            assert "cannot reach" in cs.error
            assert [g.vmid for g in cs.guests] == [101]  # the last snapshot keeps serving
            await pve.start(pki.certfile, pki.keyfile)
            await inventory.wait_until(lambda s: s.clusters["home"].ok, 10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert poller.stats.failures >= 1


async def test_nodes_added_and_removed_without_restart(
    pve: TestPve, pki: Pki, inventory: Inventory
) -> None:
    async with polling(pve, pki, inventory) as poller:
        await poller.poll_once()
        assert [n.name for n in inventory.snapshot.nodes] == ["pve1"]
        pve.add_node("pve3")
        await poller.poll_once()
        assert [n.name for n in inventory.snapshot.nodes] == ["pve1", "pve3"]
        assert inventory.snapshot.nodes[1].ip is not None
        del pve.nodes["pve3"]
        await poller.poll_once()
    assert [n.name for n in inventory.snapshot.nodes] == ["pve1"]


async def test_aliases_from_tags_config_and_routes(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running", config={"tags": "alias.docs;web"})
    pve.add_vm(100, "game", status="running")
    config = Config.model_validate(
        {
            "proxmox": [cluster_config(pve, pki).model_dump()],
            "guests": {"wiki": {"aliases": ["KB"]}},
            "routes": [{"host": "mc.example.com", "guest": 100, "port": 25565}],
        }
    )
    inventory = Inventory()
    poller, client = make_poller("home", config.proxmox[0], inventory, config, None)
    try:
        await poller.poll_once()
    finally:
        await client.close()
    snap = inventory.snapshot
    assert snap.lookup_alias("docs").guests[0].vmid == 101
    assert snap.lookup_alias("kb").guests[0].vmid == 101
    assert snap.lookup_alias("mc").guests[0].vmid == 100
    assert snap.lookup_host("kb.example.com").guests[0].vmid == 101


async def test_wait_helper_times_out_clearly() -> None:
    with pytest.raises(pytest.fail.Exception, match="never"):
        await wait_for(lambda: False, 0.05, "never")
