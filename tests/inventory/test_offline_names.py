"""A guest on an offline node keeps its last known name, type, tags and aliases (marked), so
lookups by name go on finding it; against the lab, whose /cluster/resources then sends only
id, vmid, node, type and status "unknown" for it, as Proxmox does."""

from __future__ import annotations

from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.model import Guest
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer

from ..support import lab_cluster

KEEPER, NEIGHBOUR = 9631, 9632


def only(inventory: Inventory, ref: str) -> Guest:
    (found,) = inventory.snapshot.lookup_ref(ref).guests
    return found


async def test_guest_on_offline_node_keeps_its_name(lab_server: LabServer) -> None:
    lab = lab_server.cluster
    lab.add_node("pve2")
    lab.add_guest(KEEPER, "lxc", "keeper", "pve2", status="running", tags=("web", "alias.kb"))
    lab.add_guest(NEIGHBOUR, "qemu", "neighbour", "pve1", status="running")
    config = Config.model_validate(
        {"proxmox": [lab_cluster(lab_server)], "guests": {"keeper": {"aliases": ["docs"]}}}
    )
    cluster = config.proxmox[0]
    inventory = Inventory()
    poller, client = make_poller("lab", cluster, inventory, config, None)
    try:
        await poller.poll_once()
        before = only(inventory, "keeper")
        assert (before.last_known, before.status) == (False, "running")

        lab.set_node_online("pve2", False)
        await poller.poll_once()
        after = only(inventory, f"lab:{KEEPER}")
        assert after.status == "unknown"  # the truth about its state is not invented
        assert (after.name, after.type, after.tags) == ("keeper", "lxc", ("web", "alias.kb"))
        assert set(after.aliases) == {"kb", "docs"}
        assert after.last_known
        assert after.to_json()["last_known"] is True
        assert only(inventory, "keeper") == after  # by name
        snap = inventory.snapshot
        assert snap.lookup_host("keeper.example.com").guests == (after,)
        assert snap.lookup_alias("kb").guests == (after,)
        assert snap.lookup_alias("docs").guests == (after,)
        assert not only(inventory, "neighbour").last_known  # its node answers

        await poller.poll_once()  # still offline: the kept name survives the next poll too
        assert only(inventory, "keeper").last_known

        lab.set_node_online("pve2", True)
        await poller.poll_once()
        back = only(inventory, "keeper")
        assert (back.last_known, back.status) == (False, "running")
    finally:
        await client.close()
