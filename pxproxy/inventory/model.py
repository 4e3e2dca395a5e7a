"""Immutable inventory records: guests and nodes as the rest of pxproxy reads them."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

GuestType = Literal["lxc", "qemu"]


class Guest(NamedTuple):
    """One LXC container or QEMU VM. A tuple: cheap to build 10,000 times every poll."""

    cluster: str
    id: str  # "lxc/101", unique within a cluster
    type: GuestType
    node: str
    vmid: int
    name: str
    status: str  # running | stopped | paused | unknown (node offline) | ...
    template: bool
    tags: tuple[str, ...]
    aliases: tuple[str, ...]
    uptime: int
    ips: tuple[str, ...]
    ip_source: str | None  # interfaces | agent | config | None
    lock: str | None
    pool: str | None
    hastate: str | None
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    disk: int
    maxdisk: int
    netin: int
    netout: int
    diskread: int
    diskwrite: int
    # True while the guest's node is offline: /cluster/resources then sends no name, tags or
    # template flag, so those are kept from the last poll that had them (poller.py).
    last_known: bool = False

    @property
    def ref(self) -> str:
        """The unambiguous reference cluster:vmid."""
        return f"{self.cluster}:{self.vmid}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cluster": self.cluster,
            "node": self.node,
            "vmid": self.vmid,
            "type": self.type,
            "name": self.name,
            "status": self.status,
            "template": self.template,
            "ips": list(self.ips),
            "ip_source": self.ip_source,
            "tags": list(self.tags),
            "aliases": list(self.aliases),
            "uptime": self.uptime,
            "lock": self.lock,
            "pool": self.pool,
            "hastate": self.hastate,
            "cpu": self.cpu,
            "maxcpu": self.maxcpu,
            "mem": self.mem,
            "maxmem": self.maxmem,
            "disk": self.disk,
            "maxdisk": self.maxdisk,
            "netin": self.netin,
            "netout": self.netout,
            "diskread": self.diskread,
            "diskwrite": self.diskwrite,
            "last_known": self.last_known,
        }


class Node(NamedTuple):
    cluster: str
    name: str
    status: str  # online | offline | unknown
    ip: str | None
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    uptime: int
    aliases: tuple[str, ...] = ()  # from the config's `nodes:`, lowercased

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "name": self.name,
            "aliases": list(self.aliases),
            "status": self.status,
            "ip": self.ip,
            "cpu": self.cpu,
            "maxcpu": self.maxcpu,
            "mem": self.mem,
            "maxmem": self.maxmem,
            "uptime": self.uptime,
        }
