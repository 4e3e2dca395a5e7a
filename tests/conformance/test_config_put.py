"""PUT .../config of notes and tags against both peers: fakepve (PVE 9 schema and wording) and
the lab agree on the stored description, the tags' normalisation and the digest check."""

from __future__ import annotations

import pytest

from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import PveServerError

from ..peers import Peer
from .test_shared import password_cfg

LXC_DIGEST_CHANGED = "detected modified configuration - file changed by other user? Try again."


async def test_notes_and_tags_are_stored_as_pve_stores_them(peer: Peer) -> None:
    peer.add_ct(7301, "wiki")
    async with PveClient(password_cfg(peer)) as client:
        before = await client.guest_config("lxc", "pve1", 7301)
        await client.update_guest_config(
            "lxc",
            "pve1",
            7301,
            description="# Wiki\n```yaml\npxproxy: {}\n```",
            tags="Web,pxproxy db",
        )
        after = await client.guest_config("lxc", "pve1", 7301)
        resources = await client.get("/cluster/resources", {"type": "vm"})
        await client.update_guest_config("lxc", "pve1", 7301, delete=("tags",))
        untagged = await client.guest_config("lxc", "pve1", 7301)
    assert after["description"] == "# Wiki\n```yaml\npxproxy: {}\n```"
    assert after["tags"] == "db;pxproxy;web"
    assert after["digest"] != before["digest"]
    (entry,) = [e for e in resources if e["vmid"] == 7301]
    assert entry["tags"] == "db;pxproxy;web"
    assert "tags" not in untagged


async def test_a_stale_digest_is_refused(peer: Peer) -> None:
    peer.add_ct(7302, "git")
    peer.add_vm(7303, "db")
    async with PveClient(password_cfg(peer)) as client:
        stale = (await client.guest_config("lxc", "pve1", 7302))["digest"]
        await client.update_guest_config("lxc", "pve1", 7302, description="theirs")
        with pytest.raises(PveServerError) as ct_error:
            await client.update_guest_config("lxc", "pve1", 7302, description="mine", digest=stale)
        vm_stale = (await client.guest_config("qemu", "pve1", 7303))["digest"]
        await client.update_guest_config("qemu", "pve1", 7303, description="theirs")
        with pytest.raises(PveServerError) as vm_error:
            await client.update_guest_config(
                "qemu", "pve1", 7303, description="mine", digest=vm_stale
            )
        kept = await client.guest_config("lxc", "pve1", 7302)
    assert ct_error.value.status == 500
    assert ct_error.value.message == LXC_DIGEST_CHANGED
    # qemu-server words it its own way (PVE: "missmatch", fakepve: "mismatch").
    assert vm_error.value.status == 500
    assert "(file change by other user?)" in vm_error.value.message
    assert kept["description"] == "theirs"
