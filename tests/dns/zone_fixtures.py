"""A DnsSource whose snapshot, routes, gate states and endpoints a test sets directly."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset

from pxproxy.config.companion import DnsConfig
from pxproxy.config.models import RouteConfig
from pxproxy.inventory.model import Guest, Node
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.routing.route_set import RouteSet, merge
from pxproxy.wake.contract import AlwaysReady, Gate, WakeState
from tests.builders import make_guest, make_node

ZONE = "pve.internal"
PROXY = ("127.0.0.1", 8080)


class FakeGate(AlwaysReady):
    def __init__(self, state: WakeState) -> None:
        self.state = state


class FakeSource:
    """Gates by the route's guest ref; a route without idle is always ready."""

    def __init__(
        self,
        guests: Iterable[Guest] = (),
        nodes: Iterable[Node] = (),
        routes: Sequence[dict[str, Any]] = (),
        endpoints: ProxyEndpoints | None = None,
        *,
        clusters: dict[str, tuple[list[Guest], list[Node]]] | None = None,
    ) -> None:
        if clusters is None:
            clusters = {"home": (list(guests), list(nodes))}
        self.snapshot = Snapshot(
            {name: ClusterSnapshot.build(name, g, n) for name, (g, n) in clusters.items()}
        )
        self.routes: RouteSet = merge([RouteConfig.model_validate(r) for r in routes], [])
        self.endpoints = endpoints if endpoints is not None else ProxyEndpoints(PROXY)
        self.states: dict[str, WakeState] = {}
        self.gate_calls = 0

    def gate_for(self, route: RouteConfig) -> Gate:
        self.gate_calls += 1
        if route.idle is None:
            return AlwaysReady()
        return FakeGate(self.states.get(route.guest, WakeState.READY))


def settings(**overrides: Any) -> DnsConfig:
    return DnsConfig.model_validate({"listen": "127.0.0.1:0", "zone": ZONE, **overrides})


def wiki_and_friends() -> FakeSource:
    """wiki (idle-watched, HTTP and a TCP route), db (no idle route), a node with an address."""
    return FakeSource(
        [
            make_guest(101, "wiki", ips=("10.0.0.5", "fd00::5"), aliases=("docs",)),
            make_guest(102, "db", ips=("10.0.0.6",)),
            make_guest(103, "mc", ips=("10.0.0.7",)),
        ],
        [make_node("pve1", ip="10.0.0.1")],
        [
            {"host": "wiki.example.com", "guest": "wiki", "port": 80, "idle": {}},
            {"host": ["git.pve.internal"], "guest": "db", "port": 3000},
            {"listen": "0.0.0.0:25565", "guest": "mc", "port": 25565, "idle": {}},
            {"host": "mc.example.com", "guest": "mc", "port": 8123, "idle": {}},
        ],
        ProxyEndpoints(PROXY, {"0.0.0.0:25565": ("127.0.0.1", 35565)}),
    )


def query(name: str, rdtype: str = "A", **kwargs: Any) -> dns.message.QueryMessage:
    made = dns.message.make_query(name, rdtype, **kwargs)
    assert isinstance(made, dns.message.QueryMessage)
    return made


def records(section: list[dns.rrset.RRset], rdtype: str | None = None) -> list[str]:
    """Each record as "name TYPE data", in order."""
    return [
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd.to_text()}"
        for rrset in section
        if rdtype is None or dns.rdatatype.to_text(rrset.rdtype) == rdtype
        for rd in rrset
    ]


def is_authoritative(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AA)
