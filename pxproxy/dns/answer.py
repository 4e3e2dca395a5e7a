"""A parsed query in, a response out: no sockets here (server.py and wire.py hold those).

- Names in the zone (zone.py says which) answer A/AAAA with their guest's current addresses;
  `_<port>._tcp.<name>` and `_<port>._udp.<name>` answer SRV (priority 0, weight 1, the port,
  target `<name>.<zone>.`)
  with the target's A/AAAA in the additional section. ANY answers what A, AAAA (and SOA, NS at
  the apex, PTR at a reverse name) would: a few records, not a zone dump.
- Parked guest (an idle-watched route of it whose gate is not ready): its names answer the proxy
  listener's address (`ProxyEndpoints.http`; A or AAAA by its family; a host name there answers
  no address), its SRV the bound port of its TCP (UDP) route to that port, else the proxy
  listener's port (for `_udp`: the guest's port). Without a proxy listener the address of the
  guest's first bound TCP route stands in, then of its first UDP route; with none, the guest's
  own records (nothing of pxproxy's could wake it).
- The apex answers SOA and NS (`ns.<zone>.`); NXDOMAIN and NODATA carry the SOA in the authority
  section, its minimum being the TTL. Every in-zone answer is authoritative (AA); RA is never
  set and RD is ignored: no recursion.
- PTR (in-addr.arpa, ip6.arpa) for guests' and nodes' addresses; any other reverse name and
  any name outside the zone: REFUSED, as is a class other than IN and a zone transfer. An opcode
  other than QUERY: NOTIMP. EDNS version above 0: BADVERS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from ..config.companion import DnsConfig
from ..inventory.model import Guest
from ..routing.endpoints import ProxyEndpoints
from ..wake.contract import WakeState
from .source import DnsSource
from .zone import Owner, ZoneCache, ZoneIndex

# What the responder advertises as its EDNS UDP size (the DNS flag day 2020 value).
UDP_PAYLOAD = 1232
IN = dns.rdataclass.IN
_A, _AAAA, _ANY = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.ANY
_SRV, _PTR, _SOA, _NS = dns.rdatatype.SRV, dns.rdatatype.PTR, dns.rdatatype.SOA, dns.rdatatype.NS
_TRANSFERS = {dns.rdatatype.AXFR, dns.rdatatype.IXFR}
_REVERSE_SUFFIXES = (".in-addr.arpa", ".ip6.arpa")
_REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
# SOA timers: no secondaries pull this zone; the values only need to be sane.
_SOA_REFRESH_S, _SOA_RETRY_S, _SOA_EXPIRE_S = 60, 30, 3600


# dnspython's rdata constructors are untyped; these say what they build.
def _a(ip: str) -> dns.rdata.Rdata:
    return A(IN, _A, ip)  # type: ignore[no-untyped-call]


def _aaaa(ip: str) -> dns.rdata.Rdata:
    return AAAA(IN, _AAAA, ip)  # type: ignore[no-untyped-call]


def _name_rdata(
    kind: type[NS] | type[PTR], rdtype: dns.rdatatype.RdataType, target: dns.name.Name
) -> dns.rdata.Rdata:
    return kind(IN, rdtype, target)


# Not 0: HAProxy's server-template takes an SRV weight as its server's weight, and a server of
# weight 0 is never chosen ("no server available").
SRV_WEIGHT = 1


def _srv(port: int, target: dns.name.Name) -> dns.rdata.Rdata:
    return SRV(IN, _SRV, 0, SRV_WEIGHT, port, target)  # type: ignore[no-untyped-call]


def _soa_rdata(origin: dns.name.Name, serial: int, minimum: int) -> dns.rdata.Rdata:
    return SOA(  # type: ignore[no-untyped-call]
        IN,
        _SOA,
        dns.name.from_text("ns", origin),
        dns.name.from_text("hostmaster", origin),
        serial,
        _SOA_REFRESH_S,
        _SOA_RETRY_S,
        _SOA_EXPIRE_S,
        minimum,
    )


def _is_v6(ip: str) -> bool:
    return ":" in ip


def _ip_or_none(host: str) -> str | None:
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        return None


class Answerer:
    def __init__(self, settings: DnsConfig, source: DnsSource) -> None:
        self._source = source
        self._zones = ZoneCache(settings)
        self._ttl = round(settings.ttl)
        self._suffix = "." + settings.zone

    def zone(self) -> ZoneIndex:
        source = self._source
        return self._zones.get(source.snapshot, source.routes)

    @property
    def endpoints(self) -> ProxyEndpoints:
        return self._source.endpoints

    @property
    def builds(self) -> int:
        """How many times the indexes were built (once per new snapshot or route set)."""
        return self._zones.builds

    def volatile(self, index: ZoneIndex, text: str) -> bool | None:
        """What of the answer for a lowercased name is decided at query time: whether its guest
        is parked now (True/False), or None when its answer depends on the index alone. The
        wire cache (wire.py) keys on it."""
        if not text.endswith(self._suffix):
            return None
        rel = text[: -len(self._suffix)]
        if rel.startswith("_"):
            parts = rel.split(".", 2)
            if len(parts) != 3 or parts[1] not in _PROTOCOL_LABELS:
                return None
            rel = parts[2]
        owner = index.owner(rel)
        if owner is None or len(owner.guests) != 1:
            return None
        guest = owner.guests[0]
        return self._parked(index, guest) if guest.ref in index.idle_routes else None

    # ------------------------------------------------------------------ the query

    def respond(self, query: dns.message.Message) -> dns.message.Message:
        """The response to a query of exactly one question (wire.py checks that)."""
        response = dns.message.make_response(query, our_payload=UDP_PAYLOAD)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return response
        question = query.question[0]
        qtype = question.rdtype
        if question.rdclass != IN or qtype in _TRANSFERS:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        index = self.zone()
        qname = question.name
        text = qname.to_text(omit_final_dot=True).lower()
        if text == index.zone:
            self._apex(index, qname, qtype, response)
        elif text.endswith(self._suffix):
            self._in_zone(index, qname, text[: -len(self._suffix)], qtype, response)
        elif text.endswith(_REVERSE_SUFFIXES) or text in _REVERSE_ZONES:
            self._reverse(index, qname, text, qtype, response)
        else:
            response.set_rcode(dns.rcode.REFUSED)
        return response

    def _apex(
        self, index: ZoneIndex, qname: dns.name.Name, qtype: int, response: dns.message.Message
    ) -> None:
        response.flags |= dns.flags.AA
        if qtype in (_SOA, _ANY):
            response.answer.append(self._rrset(qname, [self._soa(index)]))
        if qtype in (_NS, _ANY):
            ns = _name_rdata(NS, _NS, dns.name.from_text("ns", index.origin))
            response.answer.append(self._rrset(qname, [ns]))
        if not response.answer:
            self._no_data(index, response)

    def _in_zone(
        self,
        index: ZoneIndex,
        qname: dns.name.Name,
        rel: str,
        qtype: int,
        response: dns.message.Message,
    ) -> None:
        response.flags |= dns.flags.AA
        if rel.startswith("_"):
            self._service(index, qname, rel, qtype, response)
            return
        owner = index.owner(rel)
        if owner is None:
            if rel in index.empty:
                self._no_data(index, response)
            else:
                self._nx_domain(index, response)
            return
        if qtype in (_A, _AAAA, _ANY):
            addresses = self._addresses(index, owner)
            response.answer.extend(self._address_rrsets(qname, addresses, qtype))
        if not response.answer:
            self._no_data(index, response)

    def _service(
        self,
        index: ZoneIndex,
        qname: dns.name.Name,
        rel: str,
        qtype: int,
        response: dns.message.Message,
    ) -> None:
        """`_<port>._tcp.<name>` / `_<port>._udp.<name>` (SRV), and `_tcp.<name>` /
        `_udp.<name>`, which exist (empty) beneath them."""
        parts = rel.split(".", 2)
        if len(parts) == 2 and parts[0] in _PROTOCOL_LABELS:
            if index.owner(parts[1]) is not None:
                self._no_data(index, response)
            else:
                self._nx_domain(index, response)
            return
        port = _port(parts[0]) if len(parts) == 3 and parts[1] in _PROTOCOL_LABELS else None
        owner = index.owner(parts[2]) if port is not None else None
        if port is None or owner is None:
            self._nx_domain(index, response)
            return
        if qtype in (_SRV, _ANY) and not owner.ambiguous:
            target = qname.parent().parent()
            port = self._service_port(index, owner, port, udp=parts[1] == "_udp")
            response.answer.append(self._rrset(qname, [_srv(port, target)]))
            addresses = self._addresses(index, owner)
            response.additional.extend(self._address_rrsets(target, addresses, _ANY))
        if not response.answer:
            self._no_data(index, response)

    def _reverse(
        self,
        index: ZoneIndex,
        qname: dns.name.Name,
        text: str,
        qtype: int,
        response: dns.message.Message,
    ) -> None:
        targets = index.reverse.get(text)
        if targets is None:
            # Not a guest's address: another server may be authoritative for it.
            response.set_rcode(dns.rcode.REFUSED)
            return
        response.flags |= dns.flags.AA
        if qtype in (_PTR, _ANY):
            rdatas = [
                _name_rdata(PTR, _PTR, dns.name.from_text(rel, index.origin)) for rel in targets
            ]
            response.answer.append(self._rrset(qname, rdatas))

    # ------------------------------------------------------------------ parking

    def _parked(self, index: ZoneIndex, guest: Guest) -> bool:
        routes = index.idle_routes.get(guest.ref)
        if not routes:
            return False
        gate_for = self._source.gate_for
        return any(gate_for(route).state is not WakeState.READY for route in routes)

    def _addresses(self, index: ZoneIndex, owner: Owner) -> tuple[str, ...]:
        if not owner.guests:
            return owner.addresses
        if owner.ambiguous:
            return ()
        guest = owner.guests[0]
        if self._parked(index, guest):
            host = self._proxy_host(index, guest)
            if host is not None:
                ip = _ip_or_none(host)
                return (ip,) if ip is not None else ()
        return guest.ips

    def _proxy_host(self, index: ZoneIndex, guest: Guest) -> str | None:
        endpoints = self._source.endpoints
        if endpoints.http is not None:
            return endpoints.http[0]
        for route in index.tcp_routes.get(guest.ref, {}).values():
            bound = endpoints.tcp.get(route.listen or "")
            if bound is not None:
                return bound[0]
        for route in index.udp_routes.get(guest.ref, {}).values():
            bound = endpoints.udp.get(route.listen or "")
            if bound is not None:
                return bound[0]
        return None

    def _service_port(self, index: ZoneIndex, owner: Owner, port: int, *, udp: bool) -> int:
        if not owner.guests or not self._parked(index, owner.guests[0]):
            return port
        guest = owner.guests[0]
        endpoints = self._source.endpoints
        if udp:
            # Only a UDP route of that port can take the datagrams: no proxy listener does.
            udp_route = index.udp_routes.get(guest.ref, {}).get(port)
            on = endpoints.udp.get(udp_route.listen or "") if udp_route is not None else None
            return on[1] if on is not None else port
        route = index.tcp_routes.get(guest.ref, {}).get(port)
        bound = endpoints.tcp.get(route.listen or "") if route is not None else None
        if bound is not None:
            return bound[1]
        if endpoints.http is not None:
            return endpoints.http[1]
        if self._proxy_host(index, guest) is not None:
            # No proxy listener: the guest's first bound TCP route carries its addresses.
            for tcp_route in index.tcp_routes.get(guest.ref, {}).values():
                found = endpoints.tcp.get(tcp_route.listen or "")
                if found is not None:
                    return found[1]
        return port

    # ------------------------------------------------------------------ records

    def _rrset(self, name: dns.name.Name, rdatas: Iterable[dns.rdata.Rdata]) -> dns.rrset.RRset:
        return dns.rrset.from_rdata_list(name, self._ttl, list(rdatas))

    def _address_rrsets(
        self, name: dns.name.Name, addresses: tuple[str, ...], qtype: int
    ) -> list[dns.rrset.RRset]:
        out: list[dns.rrset.RRset] = []
        if qtype in (_A, _ANY):
            v4 = [_a(ip) for ip in addresses if not _is_v6(ip)]
            if v4:
                out.append(self._rrset(name, v4))
        if qtype in (_AAAA, _ANY):
            v6 = [_aaaa(ip) for ip in addresses if _is_v6(ip)]
            if v6:
                out.append(self._rrset(name, v6))
        return out

    def _soa(self, index: ZoneIndex) -> dns.rdata.Rdata:
        return _soa_rdata(index.origin, index.serial, self._ttl)

    def _no_data(self, index: ZoneIndex, response: dns.message.Message) -> None:
        response.authority.append(self._rrset(index.origin, [self._soa(index)]))

    def _nx_domain(self, index: ZoneIndex, response: dns.message.Message) -> None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        self._no_data(index, response)


_PROTOCOL_LABELS = ("_tcp", "_udp")


def _port(label: str) -> int | None:
    """ "_8080" -> 8080; None for anything but a port in its shortest decimal form."""
    digits = label[1:]
    if not (1 <= len(digits) <= 5 and digits.isascii() and digits.isdigit()):
        return None
    port = int(digits)
    return port if 1 <= port <= 65535 and str(port) == digits else None
