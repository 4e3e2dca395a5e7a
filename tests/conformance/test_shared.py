"""The conformance suite every Proxmox peer must pass with pxproxy's client: fakepve (third
party, PVE 9 schema and wording) and pxproxy's lab. Same tests, same expectations."""

from __future__ import annotations

import pytest

from pxproxy.config.models import ClusterConfig, Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.ingest import parse_resources
from pxproxy.inventory.store import Inventory
from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import (
    PveAuthError,
    PveNodeUnreachableError,
    PveNotFoundError,
    PveParameterError,
    PvePermissionError,
    PveServerError,
)
from pxproxy.pve.upid import parse_upid

from ..peers import Peer

TOKEN_ID = "pxproxy@pve!daemon"
TOKEN_SECRET = "conformance-token-secret"


def password_cfg(peer: Peer, **overrides: object) -> ClusterConfig:
    data: dict[str, object] = {
        "url": peer.url,
        "username": "root@pam",
        "password": peer.root_password,
        "tls": {"fingerprint": peer.fingerprint},
        "timeout": "5s",
        "ips": {"loopback": True},  # the lab's guests live on 127.x addresses
    }
    data.update(overrides)
    return ClusterConfig.model_validate(data)


def token_cfg(peer: Peer, secret: str = TOKEN_SECRET) -> ClusterConfig:
    peer.add_token(TOKEN_ID, TOKEN_SECRET)
    return ClusterConfig.model_validate(
        {
            "url": peer.url,
            "token_id": TOKEN_ID,
            "secret": secret,
            "tls": {"fingerprint": peer.fingerprint},
            "timeout": "5s",
        }
    )


async def test_version(peer: Peer) -> None:
    async with PveClient(password_cfg(peer)) as client:
        version = await client.version()
    assert isinstance(version["version"], str)
    assert version["version"][0].isdigit()


async def test_ticket_is_reused(peer: Peer) -> None:
    async with PveClient(password_cfg(peer)) as client:
        await client.version()
        await client.cluster_resources_raw()
    assert peer.count("/access/ticket", "POST") == 1


async def test_wrong_password(peer: Peer) -> None:
    async with PveClient(password_cfg(peer, password="wrong")) as client:
        with pytest.raises(PveAuthError) as info:
            await client.version()
    assert info.value.status == 401


async def test_token_auth_and_power(peer: Peer) -> None:
    peer.add_ct(101, "wiki", running=True)
    async with PveClient(token_cfg(peer)) as client:
        upid = await client.guest_action("lxc", "pve1", 101, "stop")
        status = await client.wait_task(upid, timeout_s=10)
    assert status.ok
    assert parse_upid(upid).node == "pve1"
    assert peer.status(101) == "stopped"
    assert peer.count("/access/ticket", "POST") == 0


async def test_wrong_token(peer: Peer) -> None:
    async with PveClient(token_cfg(peer, secret="not-the-secret")) as client:
        with pytest.raises(PveAuthError):
            await client.version()


async def test_expired_ticket_is_reobtained(peer: Peer) -> None:
    async with PveClient(password_cfg(peer)) as client:
        await client.version()
        peer.expire_tickets()
        await client.version()
    assert peer.count("/access/ticket", "POST") == 2


async def test_start_with_ticket_and_csrf(peer: Peer) -> None:
    peer.add_ct(101, "wiki")
    async with PveClient(password_cfg(peer)) as client:
        upid = await client.guest_action("lxc", "pve1", 101, "start")
        status = await client.wait_task(upid, timeout_s=10)
    assert status.ok
    assert status.exitstatus == "OK"
    assert peer.status(101) == "running"


async def test_lxc_already_running(peer: Peer) -> None:
    peer.add_ct(101, "wiki", running=True)
    async with PveClient(password_cfg(peer)) as client:
        with pytest.raises(PveServerError, match="CT 101 already running"):
            await client.guest_action("lxc", "pve1", 101, "start")


async def test_lxc_not_running(peer: Peer) -> None:
    peer.add_ct(101, "wiki")
    async with PveClient(password_cfg(peer)) as client:
        with pytest.raises(PveServerError, match="CT 101 not running"):
            await client.guest_action("lxc", "pve1", 101, "shutdown")


async def test_failed_start_ends_task_with_error(peer: Peer) -> None:
    peer.add_ct(101, "wiki")
    peer.fail_start(101, "startup for container '101' failed")
    async with PveClient(password_cfg(peer)) as client:
        upid = await client.guest_action("lxc", "pve1", 101, "start")
        status = await client.wait_task(upid, timeout_s=10)
        log = await client.get(f"/nodes/pve1/tasks/{upid}/log")
    assert not status.ok
    assert "startup for container '101' failed" in (status.exitstatus or "")
    assert log[-1]["t"].startswith("TASK ERROR:")
    assert peer.status(101) == "stopped"


async def test_missing_guest_is_not_found(peer: Peer) -> None:
    async with PveClient(password_cfg(peer)) as client:
        with pytest.raises(PveNotFoundError, match="does not exist"):
            await client.guest_config("lxc", "pve1", 999)


async def test_unknown_path_is_not_found(peer: Peer) -> None:
    # PVE answers 501 "Method ... not implemented" (PveNotImplementedError, a PveNotFoundError);
    # fakepve 0.5 answers 404. Both must surface as "not found".
    async with PveClient(password_cfg(peer)) as client:
        with pytest.raises(PveNotFoundError):
            await client.get("/no/such/thing")


async def test_parameter_error_names_the_field(peer: Peer) -> None:
    peer.add_ct(101, "wiki", running=True)
    async with PveClient(password_cfg(peer)) as client:
        with pytest.raises(PveParameterError) as info:
            await client.post("/nodes/pve1/lxc/101/status/shutdown", {"timeout": "soon"})
    assert set(info.value.errors) == {"timeout"}


async def test_permission_error_names_the_privilege(peer: Peer) -> None:
    peer.add_ct(101, "wiki")
    cfg = token_cfg(peer)
    peer.restrict("pxproxy@pve", "/vms", "VM.Audit")
    async with PveClient(cfg) as client:
        resources = parse_resources(await client.cluster_resources_raw(), "c")
        with pytest.raises(PvePermissionError) as info:
            await client.guest_action("lxc", "pve1", 101, "start")
    assert [g.vmid for g in resources.guests] == [101]
    assert (info.value.acl_path, info.value.privilege) == ("/vms/101", "VM.PowerMgmt")


async def test_offline_node(peer: Peer) -> None:
    peer.add_node("pve2")
    peer.add_ct(101, "wiki", node="pve2", running=True, static=True)
    peer.set_node_offline("pve2")
    async with PveClient(password_cfg(peer)) as client:
        resources = parse_resources(await client.cluster_resources_raw(), "c")
        with pytest.raises(PveNodeUnreachableError) as info:
            await client.guest_status("lxc", "pve2", 101)
    (guest,) = resources.guests
    assert guest.status == "unknown"
    assert info.value.status in (595, 596)
    assert {n.name: n.status for n in resources.nodes}["pve2"] == "offline"


async def test_resources_and_cluster_status_shapes(peer: Peer) -> None:
    peer.add_node("pve2")
    peer.add_ct(101, "wiki", running=True)
    peer.add_vm(200, "game", node="pve2")
    async with PveClient(password_cfg(peer)) as client:
        resources = parse_resources(await client.cluster_resources_raw(), "c")
        status = await client.cluster_status()
        guest_status = await client.guest_status("lxc", "pve1", 101)
    by_id = {g.id: g for g in resources.guests}
    assert set(by_id) == {"lxc/101", "qemu/200"}
    assert (by_id["lxc/101"].name, by_id["lxc/101"].status) == ("wiki", "running")
    assert (by_id["qemu/200"].node, by_id["qemu/200"].status) == ("pve2", "stopped")
    assert by_id["lxc/101"].maxmem > 0
    assert [n.name for n in status.nodes] == ["pve1", "pve2"]
    assert all(n.ip for n in status.nodes)
    assert guest_status.status == "running"


async def test_addresses_from_every_source(peer: Peer) -> None:
    peer.add_ct(102, "static", static=True)
    peer.add_ct(103, "live", running=True)
    peer.add_ct(105, "stopped-dhcp")
    peer.add_vm(200, "agent", running=True, agent=True)
    peer.add_vm(202, "cloudinit", running=True, cloudinit=True)
    peer.add_vm(203, "nothing", running=True)
    cfg = password_cfg(peer)
    inventory = Inventory()
    poller, client = make_poller("c", cfg, inventory, Config(proxmox=(cfg,)), None)
    try:
        await poller.poll_once()
    finally:
        await client.close()
    got = {g.vmid: (g.ips, g.ip_source) for g in inventory.snapshot.guests}
    assert got[102] == (peer.addresses(102), "config")
    assert got[103] == (peer.addresses(103), "interfaces")
    assert got[105] == ((), None)
    assert got[200] == (peer.addresses(200), "agent")
    assert got[202] == (peer.addresses(202), "config")
    assert got[203] == ((), None)
    assert all(got[v][0] for v in (102, 103, 200, 202))
