"""Hand-built inventory records for unit tests."""

from __future__ import annotations

from pxproxy.inventory.model import Guest, GuestType, Node


def make_guest(
    vmid: int,
    name: str = "",
    *,
    cluster: str = "home",
    kind: GuestType = "lxc",
    node: str = "pve",
    status: str = "running",
    ips: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    template: bool = False,
    uptime: int = 100,
) -> Guest:
    return Guest(
        cluster=cluster,
        id=f"{kind}/{vmid}",
        type=kind,
        node=node,
        vmid=vmid,
        name=name,
        status=status,
        template=template,
        tags=tags,
        aliases=aliases,
        uptime=uptime,
        ips=ips,
        ip_source="interfaces" if ips else None,
        lock=None,
        pool=None,
        hastate=None,
        cpu=0.0,
        maxcpu=1.0,
        mem=0,
        maxmem=0,
        disk=0,
        maxdisk=0,
        netin=0,
        netout=0,
        diskread=0,
        diskwrite=0,
    )


def make_node(
    name: str, *, cluster: str = "home", status: str = "online", ip: str | None = None
) -> Node:
    return Node(
        cluster=cluster,
        name=name,
        status=status,
        ip=ip,
        cpu=0.0,
        maxcpu=4.0,
        mem=0,
        maxmem=0,
        uptime=1000,
    )
