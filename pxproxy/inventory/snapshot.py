"""Immutable inventory snapshots and the indexes every reverse lookup reads.

A snapshot is built once per poll and never mutated; readers hold a reference and swap to
the next one. Indexes make each lookup a dict access.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from .model import Guest, Node

LookupKind = Literal["ip", "host", "alias", "ref"]
# ASCII digits only, at most 9 (PVE vmids end at 999999999): str.isdigit() and \d also accept
# "²" or Arabic-Indic digits, and int() refuses those or strings beyond 4300 digits.
_VMID = r"[0-9]{1,9}"
_VMID_RE = re.compile(_VMID)
_REF_CLUSTER_RE = re.compile(rf"^(?P<cluster>[^:/\s]+):(?P<vmid>{_VMID})$")
_REF_NODE_RE = re.compile(rf"^(?P<node>[^:/\s]+)/(?P<vmid>{_VMID})$")
# A node named per cluster: "home:pve1" (a cluster label holds no ':', '/' or space).
_NODE_IN_CLUSTER_RE = re.compile(r"^(?P<cluster>[^:/\s]+):(?P<node>[^:/\s]+)$")


class Match(NamedTuple):
    """What a lookup found: nothing, one guest or node, or several (ambiguous)."""

    guests: tuple[Guest, ...] = ()
    nodes: tuple[Node, ...] = ()

    @property
    def total(self) -> int:
        return len(self.guests) + len(self.nodes)


NO_MATCH = Match()


def canonical_ip(text: str) -> str | None:
    """ "[fe80::1%eth0]" -> "fe80::1"; None when it is not an address."""
    value = text.strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    value = value.split("%", 1)[0]
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        return None


def _prefer_running(guests: tuple[Guest, ...]) -> tuple[Guest, ...]:
    """Deterministic tie-break for an address: a running guest owns it over stopped ones
    (a stopped guest's static config may repeat an address DHCP handed out since)."""
    if len(guests) < 2:
        return guests
    running = tuple(g for g in guests if g.status == "running")
    return running if len(running) == 1 else guests


def _add(index: dict[str, tuple[Guest, ...]], key: str, guest: Guest) -> None:
    have = index.get(key)
    if have is None:
        index[key] = (guest,)
    elif guest not in have:
        index[key] = (*have, guest)


@dataclass(frozen=True, slots=True, eq=False)
class ClusterSnapshot:
    """One cluster as of its last poll. `ok` False: the data is the last good one (stale),
    either because the poll failed or, `degraded`, because its answer was refused."""

    name: str
    guests: tuple[Guest, ...]
    nodes: tuple[Node, ...]
    pve_cluster_name: str | None = None
    ok: bool = True
    error: str | None = None
    degraded: bool = False  # Proxmox answered, but too many entries were rejected to use it
    warnings: tuple[str, ...] = ()
    last_success: float | None = None  # time.monotonic() of the last successful poll
    by_id: dict[str, Guest] = field(default_factory=dict)
    by_vmid: dict[int, Guest] = field(default_factory=dict)
    by_name: dict[str, tuple[Guest, ...]] = field(default_factory=dict)
    by_ip: dict[str, tuple[Guest, ...]] = field(default_factory=dict)
    by_alias: dict[str, tuple[Guest, ...]] = field(default_factory=dict)
    node_by_name: dict[str, Node] = field(default_factory=dict)
    node_by_ip: dict[str, Node] = field(default_factory=dict)
    node_by_alias: dict[str, tuple[Node, ...]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        name: str,
        guests: Iterable[Guest],
        nodes: Iterable[Node],
        *,
        pve_cluster_name: str | None = None,
        warnings: tuple[str, ...] = (),
        last_success: float | None = None,
    ) -> ClusterSnapshot:
        ordered = tuple(sorted(guests, key=lambda g: g.vmid))
        node_list = tuple(nodes)
        by_id: dict[str, Guest] = {}
        by_vmid: dict[int, Guest] = {}
        by_name: dict[str, tuple[Guest, ...]] = {}
        by_ip: dict[str, tuple[Guest, ...]] = {}
        by_alias: dict[str, tuple[Guest, ...]] = {}
        for g in ordered:
            by_id[g.id] = g
            by_vmid[g.vmid] = g
            if g.name:
                _add(by_name, g.name.lower(), g)
            for ip in g.ips:
                _add(by_ip, ip, g)
            for alias in g.aliases:
                _add(by_alias, alias, g)
        for key, found in by_ip.items():
            if len(found) > 1:
                by_ip[key] = _prefer_running(found)
        node_by_name = {n.name.lower(): n for n in node_list}
        node_by_ip = {n.ip: n for n in node_list if n.ip}
        node_by_alias: dict[str, tuple[Node, ...]] = {}
        for n in node_list:
            for alias in n.aliases:
                node_by_alias[alias] = (*node_by_alias.get(alias, ()), n)
        return cls(
            name=name,
            guests=ordered,
            nodes=node_list,
            pve_cluster_name=pve_cluster_name,
            warnings=warnings,
            last_success=last_success if last_success is not None else time.monotonic(),
            by_id=by_id,
            by_vmid=by_vmid,
            by_name=by_name,
            by_ip=by_ip,
            by_alias=by_alias,
            node_by_name=node_by_name,
            node_by_ip=node_by_ip,
            node_by_alias=node_by_alias,
        )

    def failed(self, error: str) -> ClusterSnapshot:
        """The same data marked stale: indexes are shared, nothing is rebuilt."""
        return replace(self, ok=False, error=error, degraded=False)

    def held(self, reason: str) -> ClusterSnapshot:
        """The same data kept in place of a poll whose entries were rejected."""
        return replace(self, ok=False, error=reason, degraded=True)

    @property
    def state(self) -> Literal["ok", "degraded", "failed"]:
        if self.ok:
            return "ok"
        return "degraded" if self.degraded else "failed"

    def age_s(self, now: float | None = None) -> float | None:
        if self.last_success is None:
            return None
        return (time.monotonic() if now is None else now) - self.last_success


def _merge(parts: Iterable[tuple[Guest, ...] | None]) -> tuple[Guest, ...]:
    out: tuple[Guest, ...] = ()
    for part in parts:
        if part:
            out += part
    return out


class Snapshot:
    """Every cluster's latest snapshot. Immutable; the store swaps in a new one."""

    __slots__ = ("_single", "clusters", "created")

    def __init__(self, clusters: Mapping[str, ClusterSnapshot]) -> None:
        self.clusters: dict[str, ClusterSnapshot] = dict(clusters)
        values = list(self.clusters.values())
        # One cluster is the common case; skip the merge loops for it.
        self._single = values[0] if len(values) == 1 else None
        self.created = time.monotonic()

    def _each(self) -> Iterable[ClusterSnapshot]:
        return (self._single,) if self._single is not None else self.clusters.values()

    @property
    def guests(self) -> tuple[Guest, ...]:
        return _merge(c.guests for c in self._each())

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(n for c in self._each() for n in c.nodes)

    # ---------------------------------------------------------------- lookups

    def lookup_ip(self, text: str) -> Match:
        single = self._single
        if single is not None:
            guests = single.by_ip.get(text)
            if guests is not None:
                return Match(guests)
        key = canonical_ip(text)
        if key is None:
            return NO_MATCH
        guests = _prefer_running(_merge(c.by_ip.get(key) for c in self._each()))
        if guests:
            return Match(guests)
        return Match((), tuple(n for c in self._each() if (n := c.node_by_ip.get(key))))

    def lookup_host(self, text: str) -> Match:
        """Full name, then first DNS label, then the same as aliases; then node names, then node
        aliases. Route hosts come before all of these (routing/host_lookup.py)."""
        full = text.strip().rstrip(".").lower()
        if not full:
            return NO_MATCH
        label = full.split(".", 1)[0]
        keys = (full,) if label == full else (full, label)
        for index in ("by_name", "by_alias"):
            for key in keys:
                found = _merge(getattr(c, index).get(key) for c in self._each())
                if found:
                    return Match(found)
        for key in keys:
            nodes = tuple(n for c in self._each() if (n := c.node_by_name.get(key)))
            if nodes:
                return Match((), nodes)
        for key in keys:
            nodes = self._node_aliases(key)
            if nodes:
                return Match((), nodes)
        return NO_MATCH

    def lookup_alias(self, text: str) -> Match:
        """Guest aliases first, then node aliases (`nodes:` in the config)."""
        key = text.strip().lower()
        guests = _merge(c.by_alias.get(key) for c in self._each())
        return Match(guests) if guests else Match((), self._node_aliases(key))

    def _node_aliases(self, key: str) -> tuple[Node, ...]:
        return tuple(n for c in self._each() for n in c.node_by_alias.get(key, ()))

    def lookup_ref(self, ref: str) -> Match:
        """A guest by name | vmid | node/vmid | cluster:vmid | lxc/101."""
        text = ref.strip()
        if _VMID_RE.fullmatch(text):
            vmid = int(text)
            return Match(tuple(g for c in self._each() if (g := c.by_vmid.get(vmid))))
        if m := _REF_CLUSTER_RE.match(text):
            cluster = self.clusters.get(m["cluster"])
            guest = cluster.by_vmid.get(int(m["vmid"])) if cluster else None
            return Match((guest,)) if guest else NO_MATCH
        if m := _REF_NODE_RE.match(text):
            first, vmid = m["node"], int(m["vmid"])
            if first in ("lxc", "qemu"):
                by_id = tuple(g for c in self._each() if (g := c.by_id.get(text)))
                if by_id:
                    return Match(by_id)
            return Match(
                tuple(
                    g
                    for c in self._each()
                    if (g := c.by_vmid.get(vmid)) is not None and g.node == first
                )
            )
        return Match(_merge(c.by_name.get(text.lower()) for c in self._each()))

    def node(self, text: str) -> Match:
        """The one resolver of a node as a client names it: `pve1` or an alias (`hv1`) in any
        cluster, or `home:pve1` / `home:hv1` in that cluster only. Names win over aliases; a
        bare name found in several clusters is ambiguous (several nodes in the match)."""
        ref = text.strip()
        if m := _NODE_IN_CLUSTER_RE.match(ref):
            cluster = self.clusters.get(m["cluster"])
            if cluster is None:
                return NO_MATCH
            key = m["node"].lower()
            found = cluster.node_by_name.get(key)
            return Match((), (found,) if found else cluster.node_by_alias.get(key, ()))
        key = ref.lower()
        nodes = tuple(n for c in self._each() if (n := c.node_by_name.get(key)))
        return Match((), nodes or self._node_aliases(key))

    def guest_on_node(self, node: str, vmid: str) -> Match:
        """A guest by the node it runs on (as node() names it) and its vmid: the guests of
        /exec/{node}/{vmid} and the like. Several when a bare node name (or alias) is in
        several clusters and each has the vmid there."""
        if not _VMID_RE.fullmatch(vmid):  # ASCII, 1..9 digits: no int() of hostile strings
            return NO_MATCH
        number = int(vmid)
        nodes = self.node(node).nodes
        if nodes:
            return Match(
                tuple(
                    g
                    for n in nodes
                    if (c := self.clusters.get(n.cluster)) is not None
                    and (g := c.by_vmid.get(number)) is not None
                    and g.node == n.name
                )
            )
        # No node record (the token lacks Sys.Audit on /nodes): the name the guests carry.
        if m := _NODE_IN_CLUSTER_RE.match(node.strip()):
            cluster = self.clusters.get(m["cluster"])
            guest = cluster.by_vmid.get(number) if cluster else None
            return Match((guest,)) if guest and guest.node == m["node"] else NO_MATCH
        return self.lookup_ref(f"{node}/{vmid}")


EMPTY = Snapshot({})
