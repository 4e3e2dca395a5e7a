"""The zone's indexes, built once per (snapshot, route set) so that a query is dict lookups.

Names, relative to the zone and lowercased, in order of precedence (a name taken by an earlier
kind is not looked at again by a later one):

1. route hosts inside the zone (`dns.route_hosts`), as the route's guest;
2. guest names; 3. guest aliases; 4. vmids (`101.pve.internal`);
5. node names and 6. node aliases, when the node's address is known;
7. `ns`, the zone's name server, when `dns.listen` is one specific address;
8. wildcard route hosts (`*.apps.pve.internal`), only for names nothing above has.

A name that several guests of one kind share (the same name in two clusters) is ambiguous: it
exists, but answers no address (NOERROR, empty), and the build logs it once. Guests' addresses
are answered as the inventory has them; a guest is "parked" at query time, from its gates.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.reversename

from ..config.companion import DnsConfig
from ..config.models import RouteConfig, split_address
from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from ..routing.route_set import RouteSet

log = logging.getLogger(__name__)

_AMBIGUOUS_LOGGED = 10  # names listed in the log line; the rest are counted


@dataclass(frozen=True, slots=True)
class Owner:
    """What a name stands for: one guest (or several: ambiguous), or fixed addresses (a node,
    the name server)."""

    guests: tuple[Guest, ...] = ()
    addresses: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return len(self.guests) > 1


@dataclass(slots=True)
class ZoneIndex:
    zone: str  # "pve.internal"
    origin: dns.name.Name
    serial: int
    names: dict[str, Owner] = field(default_factory=dict)  # "wiki" -> owner
    wildcards: dict[str, Owner] = field(default_factory=dict)  # "apps" for *.apps.<zone>
    # Names that exist only because a longer name ends in them ("b" for guest "a.b").
    empty: set[str] = field(default_factory=set)
    # "4.3.2.1.in-addr.arpa" -> the relative names its PTR records point at.
    reverse: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # guest ref (cluster:vmid) -> its idle-watched routes: parked when any gate is not ready.
    idle_routes: dict[str, tuple[RouteConfig, ...]] = field(default_factory=dict)
    # guest ref -> {guest port: TCP route}: the parked SRV port of that port.
    tcp_routes: dict[str, dict[int, RouteConfig]] = field(default_factory=dict)
    # Likewise for UDP routes (`_<port>._udp.<name>`).
    udp_routes: dict[str, dict[int, RouteConfig]] = field(default_factory=dict)
    ambiguous: tuple[str, ...] = ()

    def owner(self, rel: str) -> Owner | None:
        """The owner of a relative name, wildcard route hosts last."""
        found = self.names.get(rel)
        if found is not None or not self.wildcards:
            return found
        rest = rel
        while True:
            dot = rest.find(".")
            if dot < 0:
                return self.wildcards.get("")  # *.<zone>
            rest = rest[dot + 1 :]
            found = self.wildcards.get(rest)
            if found is not None:
                return found


def _relative(host: str, suffix: str) -> str | None:
    name = host.rstrip(".").lower()
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None


def _valid(rel: str, origin: dns.name.Name) -> bool:
    try:
        dns.name.from_text(rel, origin)
    except dns.exception.DNSException:
        return False
    return True


class _Builder:
    def __init__(self, settings: DnsConfig) -> None:
        self.zone = settings.zone
        self.suffix = "." + settings.zone
        self.origin = dns.name.from_text(settings.zone)
        self.names: dict[str, Owner] = {}
        self.ambiguous: list[str] = []

    def add_tier(self, tier: dict[str, tuple[Guest, ...]]) -> None:
        """One kind of name: its keys not taken by an earlier kind."""
        for rel, guests in tier.items():
            if rel in self.names or not _valid(rel, self.origin):
                continue
            self.names[rel] = Owner(guests)
            if len(guests) > 1:
                self.ambiguous.append(rel)

    def add_fixed(self, rel: str, addresses: tuple[str, ...]) -> None:
        if rel not in self.names and addresses and _valid(rel, self.origin):
            self.names[rel] = Owner((), addresses)


def _add(tier: dict[str, tuple[Guest, ...]], key: str, guests: Iterable[Guest]) -> None:
    have = tier.get(key, ())
    tier[key] = have + tuple(g for g in guests if g not in have)


def build_zone(settings: DnsConfig, snapshot: Snapshot, routes: RouteSet, serial: int) -> ZoneIndex:
    b = _Builder(settings)
    guests = snapshot.guests

    route_hosts: dict[str, tuple[Guest, ...]] = {}
    wildcard_hosts: dict[str, tuple[Guest, ...]] = {}
    idle: dict[str, list[RouteConfig]] = {}
    tcp: dict[str, dict[int, RouteConfig]] = {}
    udp: dict[str, dict[int, RouteConfig]] = {}
    for route in routes.routes:
        config = route.config
        found = snapshot.lookup_ref(config.guest).guests
        if len(found) == 1:
            ref = found[0].ref
            if config.idle is not None:
                idle.setdefault(ref, []).append(config)
            if config.listen is not None:
                streams = udp if config.protocol == "udp" else tcp
                streams.setdefault(ref, {}).setdefault(config.port, config)
        if not settings.route_hosts:
            continue
        for host in config.host or ():
            if host.startswith("*."):
                parent = host[2:].rstrip(".").lower()
                rel = "" if parent == b.zone else _relative(parent, b.suffix)
                if rel is not None:
                    _add(wildcard_hosts, rel, found)
            elif (rel := _relative(host, b.suffix)) is not None:
                _add(route_hosts, rel, found)

    by_name: dict[str, tuple[Guest, ...]] = {}
    by_alias: dict[str, tuple[Guest, ...]] = {}
    by_vmid: dict[str, tuple[Guest, ...]] = {}
    for g in guests:
        if g.name:
            _add(by_name, g.name.lower(), (g,))
        for alias in g.aliases:
            _add(by_alias, alias.lower(), (g,))
        _add(by_vmid, str(g.vmid), (g,))
    # Route hosts first: a route host names its route's guest even where a guest has that name.
    for tier in (route_hosts, by_name, by_alias, by_vmid):
        b.add_tier(tier)

    nodes = [n for n in snapshot.nodes if n.ip]
    node_names: dict[str, list[str]] = {}
    node_aliases: dict[str, list[str]] = {}
    for node in nodes:
        assert node.ip is not None
        node_names.setdefault(node.name.lower(), []).append(node.ip)
        for alias in node.aliases:
            node_aliases.setdefault(alias.lower(), []).append(node.ip)
    for tier_nodes in (node_names, node_aliases):
        for rel, ips in tier_nodes.items():
            if len(set(ips)) == 1:  # the same node name in two clusters: left out
                b.add_fixed(rel, (ips[0],))
    host, _port = split_address(settings.listen)
    if _is_specific_ip(host):
        b.add_fixed("ns", (ipaddress.ip_address(host).compressed,))

    wildcards = {
        rel: Owner(found)
        for rel, found in wildcard_hosts.items()
        if _valid(f"x.{rel}".rstrip("."), b.origin) and found
    }
    empty: set[str] = set()
    for rel in (*b.names, *(w for w in wildcards if w)):
        parts = rel.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[i:])
            if parent not in b.names:
                empty.add(parent)

    reverse = _reverse_index(b.names, snapshot)
    if b.ambiguous:
        shown = ", ".join(f"{rel}.{b.zone}" for rel in sorted(b.ambiguous)[:_AMBIGUOUS_LOGGED])
        more = len(b.ambiguous) - _AMBIGUOUS_LOGGED
        log.warning(
            "dns: %d name(s) match several guests and answer no address: %s%s",
            len(b.ambiguous),
            shown,
            f" and {more} more" if more > 0 else "",
        )
    return ZoneIndex(
        zone=b.zone,
        origin=b.origin,
        serial=serial,
        names=b.names,
        wildcards=wildcards,
        empty=empty,
        reverse=reverse,
        idle_routes={ref: tuple(found) for ref, found in idle.items()},
        tcp_routes=tcp,
        udp_routes=udp,
        ambiguous=tuple(sorted(b.ambiguous)),
    )


def _is_specific_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _reverse_index(names: dict[str, Owner], snapshot: Snapshot) -> dict[str, tuple[str, ...]]:
    """PTR targets: a guest's name when that name is its own, else its vmid's name; a node's."""
    canonical: dict[str, str] = {}  # guest ref -> relative name
    for g in snapshot.guests:
        for rel in (g.name.lower(), str(g.vmid)):
            owner = names.get(rel)
            if rel and owner is not None and owner.guests == (g,):
                canonical[g.ref] = rel
                break
    reverse: dict[str, list[str]] = {}
    seen: set[str] = set()
    for g in snapshot.guests:
        for ip in g.ips:
            if ip in seen:
                continue
            seen.add(ip)
            # lookup_ip's tie-break: a running guest owns an address over stopped ones.
            targets = [
                canonical[o.ref] for o in snapshot.lookup_ip(ip).guests if o.ref in canonical
            ]
            if targets:
                reverse[_pointer(ip)] = targets
    for rel, owner in names.items():
        if not owner.guests:
            for ip in owner.addresses:
                if ip not in seen:
                    reverse.setdefault(_pointer(ip), []).append(rel)
    return {key: tuple(found) for key, found in reverse.items()}


def _pointer(ip: str) -> str:
    return dns.reversename.from_address(ip).to_text(omit_final_dot=True).lower()


class ZoneCache:
    """The index of the last (snapshot, route set) pair, rebuilt when either is a new object.
    The serial grows with every build (the clock's seconds, or one more than the last)."""

    def __init__(self, settings: DnsConfig) -> None:
        self.settings = settings
        self._key: tuple[Snapshot, RouteSet] | None = None
        self._index: ZoneIndex | None = None
        self._serial = 0
        self.builds = 0

    def get(self, snapshot: Snapshot, routes: RouteSet) -> ZoneIndex:
        key = self._key
        if self._index is not None and key is not None and key[0] is snapshot and key[1] is routes:
            return self._index
        self._serial = max(self._serial + 1, int(time.time())) & 0xFFFFFFFF
        index = build_zone(self.settings, snapshot, routes, self._serial)
        self._key = (snapshot, routes)
        self._index = index
        self.builds += 1
        return index
