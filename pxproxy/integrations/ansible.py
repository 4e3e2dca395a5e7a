"""The Ansible dynamic inventory (`--list` and `--host`) of the guests (templates left out).

Host names are guest names. A name that two guests share (in one cluster or across clusters)
becomes `<cluster>-<name>` for each of them, and where that still repeats,
`<cluster>-<name>-<vmid>`; a guest without a name is `<cluster>-<vmid>`.

Groups: `node_<node>`, `type_<lxc|qemu>`, `status_<status>`, `tag_<tag>`, `pool_<pool>` and
`cluster_<cluster>`, names made of letters, digits and `_` as Ansible wants them (anything
else becomes `_`). Host variables: `ansible_host` (the first IPv4 address, else the first
IPv6 one; absent without an address), `vmid`, `node`, `cluster`, `tags`, `type`, `status`,
`pool` (when set).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from .addresses import first_address

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def group_name(prefix: str, value: str) -> str:
    """`node_pve1`, `tag_my_tag` for "my-tag"."""
    return f"{prefix}_{_UNSAFE.sub('_', value)}"


def host_names(guests: Sequence[Guest]) -> dict[str, Guest]:
    """Each guest's inventory name (see the module's docstring), in `cluster:vmid` order."""
    ordered = sorted(guests, key=lambda g: (g.cluster, g.vmid))
    plain = Counter(g.name for g in ordered if g.name)
    qualified = Counter(f"{g.cluster}-{g.name}" for g in ordered if g.name)
    out: dict[str, Guest] = {}
    for guest in ordered:
        if not guest.name:
            name = f"{guest.cluster}-{guest.vmid}"
        elif plain[guest.name] == 1:
            name = guest.name
        elif qualified[f"{guest.cluster}-{guest.name}"] == 1:
            name = f"{guest.cluster}-{guest.name}"
        else:
            name = f"{guest.cluster}-{guest.name}-{guest.vmid}"
        # A derived name may equal another guest's own name: the vmid makes it unique.
        while name in out:
            name = f"{name}-{guest.vmid}"
        out[name] = guest
    return out


def host_vars(guest: Guest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "vmid": guest.vmid,
        "node": guest.node,
        "cluster": guest.cluster,
        "tags": list(guest.tags),
        "type": guest.type,
        "status": guest.status,
    }
    address = first_address(guest)
    if address is not None:
        out["ansible_host"] = address
    if guest.pool:
        out["pool"] = guest.pool
    return out


def _groups_of(guest: Guest) -> list[str]:
    groups = [
        group_name("cluster", guest.cluster),
        group_name("node", guest.node),
        group_name("type", guest.type),
        group_name("status", guest.status),
    ]
    groups += [group_name("tag", tag) for tag in guest.tags]
    if guest.pool:
        groups.append(group_name("pool", guest.pool))
    return groups


def ansible_inventory(snapshot: Snapshot) -> dict[str, Any]:
    """`ansible-inventory --list`'s input: every group with its hosts, `_meta.hostvars`."""
    hosts = host_names([g for g in snapshot.guests if not g.template])
    groups: dict[str, set[str]] = {}
    hostvars: dict[str, dict[str, Any]] = {}
    for name, guest in hosts.items():
        hostvars[name] = host_vars(guest)
        for group in _groups_of(guest):
            groups.setdefault(group, set()).add(name)
    out: dict[str, Any] = {
        "_meta": {"hostvars": hostvars},
        "all": {"children": [*sorted(groups), "ungrouped"]},
    }
    for group, members in groups.items():
        out[group] = {"hosts": sorted(members)}
    return out


def ansible_host(snapshot: Snapshot, host: str) -> dict[str, Any]:
    """`--host H`: that host's variables; `{}` for a name the inventory does not have, as the
    protocol wants."""
    guest = host_names([g for g in snapshot.guests if not g.template]).get(host)
    return host_vars(guest) if guest is not None else {}
