"""Answering without sockets: names, aliases, vmids, route hosts, SRV, PTR, the parked answers,
the apex, and every refusal."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import pytest

from pxproxy.dns.answer import Answerer
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.wake.contract import WakeState
from tests.builders import make_guest, make_node

from .zone_fixtures import (
    FakeSource,
    is_authoritative,
    query,
    records,
    settings,
    wiki_and_friends,
)

PARKED_STATES = [WakeState.ASLEEP, WakeState.WAKING, WakeState.STOPPING, WakeState.FAILED]


def ask(
    source: FakeSource, name: str, rdtype: str = "A", **overrides: object
) -> dns.message.Message:
    return Answerer(settings(**overrides), source).respond(query(name, rdtype))


def answers(source: FakeSource, name: str, rdtype: str = "A", **overrides: object) -> list[str]:
    response = ask(source, name, rdtype, **overrides)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
    return records(response.answer)


@pytest.mark.parametrize(
    ("name", "rdtype", "expected"),
    [
        ("wiki.pve.internal", "A", ["wiki.pve.internal. A 10.0.0.5"]),
        ("wiki.pve.internal", "AAAA", ["wiki.pve.internal. AAAA fd00::5"]),
        ("docs.pve.internal", "A", ["docs.pve.internal. A 10.0.0.5"]),  # an alias
        ("101.pve.internal", "A", ["101.pve.internal. A 10.0.0.5"]),  # a vmid
        ("pve1.pve.internal", "A", ["pve1.pve.internal. A 10.0.0.1"]),  # a node
        ("db.pve.internal", "AAAA", []),  # NODATA: db has no IPv6 address
        (
            "wiki.pve.internal",
            "ANY",
            ["wiki.pve.internal. A 10.0.0.5", "wiki.pve.internal. AAAA fd00::5"],
        ),
    ],
)
def test_guest_names_answer_the_guest_addresses(
    name: str, rdtype: str, expected: list[str]
) -> None:
    assert answers(wiki_and_friends(), name, rdtype) == expected


def test_case_is_kept_in_the_question_and_matched_without_it() -> None:
    response = ask(wiki_and_friends(), "WiKi.PVE.internal")
    assert str(response.question[0].name) == "WiKi.PVE.internal."
    assert records(response.answer) == ["WiKi.PVE.internal. A 10.0.0.5"]


def test_flags_and_ttl() -> None:
    response = ask(wiki_and_friends(), "wiki.pve.internal", ttl="7s")
    assert is_authoritative(response)
    assert not response.flags & dns.flags.RA  # no recursion offered
    assert response.flags & dns.flags.RD  # RD is echoed (and otherwise ignored)
    assert [rrset.ttl for rrset in response.answer] == [7]


def test_default_ttl_is_two_seconds() -> None:
    response = ask(wiki_and_friends(), "wiki.pve.internal")
    assert [rrset.ttl for rrset in response.answer] == [2]


def test_no_such_name_is_nxdomain_with_the_soa() -> None:
    response = ask(wiki_and_friends(), "nope.pve.internal", ttl="5s")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert is_authoritative(response)
    [soa] = response.authority
    assert str(soa.name) == "pve.internal."
    assert soa[0].minimum == 5
    assert soa.ttl == 5
    assert str(soa[0].mname) == "ns.pve.internal."


def test_nodata_carries_the_soa() -> None:
    response = ask(wiki_and_friends(), "wiki.pve.internal", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert records(response.authority, "SOA")


def test_apex_answers_soa_and_ns() -> None:
    source = wiki_and_friends()
    assert records(ask(source, "pve.internal", "NS").answer) == [
        "pve.internal. NS ns.pve.internal."
    ]
    [soa] = ask(source, "pve.internal", "SOA").answer
    assert soa[0].rname.to_text() == "hostmaster.pve.internal."
    # The name server's own name has the listen address when that is one address.
    assert answers(source, "ns.pve.internal", listen="127.0.0.1:5353") == [
        "ns.pve.internal. A 127.0.0.1"
    ]
    assert ask(source, "ns.pve.internal", listen="0.0.0.0:5353").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    "name", ["example.com", "pve.internal.example.com", "internal", "xpve.internal", "."]
)
def test_outside_the_zone_is_refused(name: str) -> None:
    response = ask(wiki_and_friends(), name)
    assert response.rcode() == dns.rcode.REFUSED
    assert not is_authoritative(response)
    assert response.answer == []
    assert response.authority == []


def test_other_classes_and_zone_transfers_are_refused() -> None:
    answerer = Answerer(settings(), wiki_and_friends())
    chaos = query("wiki.pve.internal", "TXT", rdclass=dns.rdataclass.CH)
    assert answerer.respond(chaos).rcode() == dns.rcode.REFUSED
    assert answerer.respond(query("pve.internal", "AXFR")).rcode() == dns.rcode.REFUSED


def test_other_opcodes_are_not_implemented() -> None:
    message = query("wiki.pve.internal")
    message.set_opcode(dns.opcode.NOTIFY)
    response = Answerer(settings(), wiki_and_friends()).respond(message)
    assert response.rcode() == dns.rcode.NOTIMP


def test_edns_version_above_zero_is_badvers() -> None:
    message = query("wiki.pve.internal", use_edns=1)
    response = Answerer(settings(), wiki_and_friends()).respond(message)
    assert response.rcode() == dns.rcode.BADVERS


# ---------------------------------------------------------------------- route hosts


def test_route_hosts_in_the_zone_answer_as_their_guest() -> None:
    # git.pve.internal is db's route; wiki.example.com is outside the zone and not served.
    assert answers(wiki_and_friends(), "git.pve.internal") == ["git.pve.internal. A 10.0.0.6"]
    assert ask(wiki_and_friends(), "wiki.example.com").rcode() == dns.rcode.REFUSED


def test_route_hosts_can_be_turned_off() -> None:
    response = ask(wiki_and_friends(), "git.pve.internal", route_hosts=False)
    assert response.rcode() == dns.rcode.NXDOMAIN


def test_a_route_host_wins_over_a_guest_of_that_name() -> None:
    source = FakeSource(
        [make_guest(101, "wiki", ips=("10.0.0.5",)), make_guest(102, "app", ips=("10.0.0.6",))],
        routes=[{"host": "wiki.pve.internal", "guest": "app", "port": 80}],
    )
    assert answers(source, "wiki.pve.internal") == ["wiki.pve.internal. A 10.0.0.6"]
    assert answers(source, "101.pve.internal") == ["101.pve.internal. A 10.0.0.5"]


def test_wildcard_route_hosts_answer_only_names_nothing_else_has() -> None:
    source = FakeSource(
        [make_guest(101, "wiki", ips=("10.0.0.5",)), make_guest(102, "app", ips=("10.0.0.6",))],
        routes=[{"host": "*.pve.internal", "guest": "app", "port": 80}],
    )
    assert answers(source, "anything.pve.internal") == ["anything.pve.internal. A 10.0.0.6"]
    assert answers(source, "a.b.pve.internal") == ["a.b.pve.internal. A 10.0.0.6"]
    assert answers(source, "wiki.pve.internal") == ["wiki.pve.internal. A 10.0.0.5"]


def test_a_route_to_no_guest_yet_exists_but_has_no_address() -> None:
    source = FakeSource(
        [make_guest(101, "wiki", ips=("10.0.0.5",))],
        routes=[{"host": "later.pve.internal", "guest": "not-yet", "port": 80}],
    )
    response = ask(source, "later.pve.internal")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


# ---------------------------------------------------------------------- ambiguity


def test_a_name_in_two_clusters_answers_no_address(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource(
        clusters={
            "home": ([make_guest(101, "wiki", ips=("10.0.0.5",))], []),
            "lab": ([make_guest(101, "wiki", cluster="lab", ips=("10.9.0.5",))], []),
        }
    )
    answerer = Answerer(settings(), source)
    for name in ("wiki.pve.internal", "101.pve.internal"):
        response = answerer.respond(query(name))
        assert response.rcode() == dns.rcode.NOERROR  # the name exists...
        assert response.answer == []  # ...but names no one guest
        assert records(response.authority, "SOA")
    assert "2 name(s) match several guests" in caplog.text
    assert "101.pve.internal, wiki.pve.internal" in caplog.text
    # No PTR can name an ambiguous name: the address has none.
    assert answerer.respond(query("5.0.0.10.in-addr.arpa", "PTR")).answer == []


def test_an_ambiguous_name_does_not_hide_the_guest_alias() -> None:
    source = FakeSource(
        clusters={
            "home": ([make_guest(101, "wiki", ips=("10.0.0.5",), aliases=("kb",))], []),
            "lab": ([make_guest(202, "wiki", cluster="lab", ips=("10.9.0.5",))], []),
        }
    )
    assert answers(source, "kb.pve.internal") == ["kb.pve.internal. A 10.0.0.5"]
    assert answers(source, "202.pve.internal") == ["202.pve.internal. A 10.9.0.5"]


# ---------------------------------------------------------------------- SRV and PTR


def test_srv_answers_the_port_with_the_target_address() -> None:
    response = ask(wiki_and_friends(), "_8080._tcp.Wiki.pve.internal", "SRV")
    assert records(response.answer) == [
        "_8080._tcp.Wiki.pve.internal. SRV 0 1 8080 Wiki.pve.internal."
    ]
    assert records(response.additional) == [
        "Wiki.pve.internal. A 10.0.0.5",
        "Wiki.pve.internal. AAAA fd00::5",
    ]


@pytest.mark.parametrize(
    "name",
    [
        "_0._tcp.wiki.pve.internal",
        "_65536._tcp.wiki.pve.internal",
        "_080._tcp.wiki.pve.internal",
        "_http._tcp.wiki.pve.internal",
        "_80._sctp.wiki.pve.internal",  # only _tcp and _udp
        "_80._tcp.nope.pve.internal",
        "_tcp.nope.pve.internal",
    ],
)
def test_srv_names_that_do_not_exist(name: str) -> None:
    assert ask(wiki_and_friends(), name, "SRV").rcode() == dns.rcode.NXDOMAIN


def test_srv_name_for_another_type_and_the_tcp_label_are_nodata() -> None:
    for name, rdtype in (("_80._tcp.wiki.pve.internal", "A"), ("_tcp.wiki.pve.internal", "SRV")):
        response = ask(wiki_and_friends(), name, rdtype)
        assert response.rcode() == dns.rcode.NOERROR, name
        assert response.answer == [], name
        assert records(response.authority, "SOA")


def test_ptr_for_guest_and_node_addresses() -> None:
    source = wiki_and_friends()
    assert answers(source, "5.0.0.10.in-addr.arpa", "PTR") == [
        "5.0.0.10.in-addr.arpa. PTR wiki.pve.internal."
    ]
    name = dns.reversename.from_address("fd00::5").to_text()
    assert answers(source, name, "PTR") == [f"{name} PTR wiki.pve.internal."]
    assert answers(source, "1.0.0.10.in-addr.arpa", "PTR") == [
        "1.0.0.10.in-addr.arpa. PTR pve1.pve.internal."
    ]
    assert is_authoritative(ask(source, "5.0.0.10.in-addr.arpa", "PTR"))


def test_ptr_names_the_vmid_when_the_name_is_not_the_guest_own() -> None:
    source = FakeSource(
        [make_guest(101, "", ips=("10.0.0.5",)), make_guest(102, "app", ips=("10.0.0.6",))]
    )
    assert answers(source, "5.0.0.10.in-addr.arpa", "PTR") == [
        "5.0.0.10.in-addr.arpa. PTR 101.pve.internal."
    ]


@pytest.mark.parametrize(
    "name", ["9.9.9.9.in-addr.arpa", "0.10.in-addr.arpa", "in-addr.arpa", "ip6.arpa"]
)
def test_other_reverse_names_are_refused(name: str) -> None:
    response = ask(wiki_and_friends(), name, "PTR")
    assert response.rcode() == dns.rcode.REFUSED


# ---------------------------------------------------------------------- parked


@pytest.mark.parametrize("state", PARKED_STATES)
def test_a_parked_guest_answers_the_proxy_address(state: WakeState) -> None:
    source = wiki_and_friends()
    source.states["wiki"] = state
    assert answers(source, "wiki.pve.internal") == ["wiki.pve.internal. A 127.0.0.1"]
    assert answers(source, "docs.pve.internal") == ["docs.pve.internal. A 127.0.0.1"]
    assert answers(source, "wiki.pve.internal", "AAAA") == []  # the proxy is IPv4 only
    srv = ask(source, "_80._tcp.wiki.pve.internal", "SRV")
    assert records(srv.answer) == ["_80._tcp.wiki.pve.internal. SRV 0 1 8080 wiki.pve.internal."]
    assert records(srv.additional) == ["wiki.pve.internal. A 127.0.0.1"]
    # Guests with no idle route keep their own addresses.
    assert answers(source, "db.pve.internal") == ["db.pve.internal. A 10.0.0.6"]


def test_the_answer_follows_the_gate_at_query_time() -> None:
    source = wiki_and_friends()
    answerer = Answerer(settings(), source)
    assert records(answerer.respond(query("wiki.pve.internal")).answer) == [
        "wiki.pve.internal. A 10.0.0.5"
    ]
    source.states["wiki"] = WakeState.ASLEEP
    assert records(answerer.respond(query("wiki.pve.internal")).answer) == [
        "wiki.pve.internal. A 127.0.0.1"
    ]
    source.states["wiki"] = WakeState.READY
    assert records(answerer.respond(query("wiki.pve.internal")).answer) == [
        "wiki.pve.internal. A 10.0.0.5"
    ]
    assert answerer.builds == 1  # the gates are read per query; the index was built once


def test_a_parked_tcp_route_answers_its_bound_port() -> None:
    source = wiki_and_friends()
    source.states["mc"] = WakeState.ASLEEP
    mc = records(ask(source, "_25565._tcp.mc.pve.internal", "SRV").answer)
    assert mc == ["_25565._tcp.mc.pve.internal. SRV 0 1 35565 mc.pve.internal."]
    # Its HTTP port has no TCP route: the proxy listener's port.
    web = records(ask(source, "_8123._tcp.mc.pve.internal", "SRV").answer)
    assert web == ["_8123._tcp.mc.pve.internal. SRV 0 1 8080 mc.pve.internal."]
    # Ready again: its own port.
    source.states["mc"] = WakeState.READY
    mc = records(ask(source, "_25565._tcp.mc.pve.internal", "SRV").answer)
    assert mc == ["_25565._tcp.mc.pve.internal. SRV 0 1 25565 mc.pve.internal."]


def test_a_parked_guest_behind_an_ipv6_proxy_answers_aaaa() -> None:
    source = wiki_and_friends()
    source.endpoints = ProxyEndpoints(("::1", 8080))
    source.states["wiki"] = WakeState.ASLEEP
    assert answers(source, "wiki.pve.internal") == []
    assert answers(source, "wiki.pve.internal", "AAAA") == ["wiki.pve.internal. AAAA ::1"]


def test_a_parked_guest_behind_a_proxy_named_by_host_name_answers_no_address() -> None:
    source = wiki_and_friends()
    source.endpoints = ProxyEndpoints(("proxy.lan", 8080))
    source.states["wiki"] = WakeState.ASLEEP
    assert answers(source, "wiki.pve.internal", "ANY") == []
    srv = records(ask(source, "_80._tcp.wiki.pve.internal", "SRV").answer)
    assert srv == ["_80._tcp.wiki.pve.internal. SRV 0 1 8080 wiki.pve.internal."]


def test_without_a_proxy_listener_a_tcp_route_stands_in() -> None:
    source = wiki_and_friends()
    source.endpoints = ProxyEndpoints(None, {"0.0.0.0:25565": ("127.0.0.2", 35565)})
    source.states["mc"] = source.states["wiki"] = WakeState.ASLEEP
    assert answers(source, "mc.pve.internal") == ["mc.pve.internal. A 127.0.0.2"]
    mc = records(ask(source, "_8123._tcp.mc.pve.internal", "SRV").answer)
    assert mc == ["_8123._tcp.mc.pve.internal. SRV 0 1 35565 mc.pve.internal."]
    # wiki has no TCP route: nothing of pxproxy's can be reached, so its own address.
    assert answers(source, "wiki.pve.internal") == ["wiki.pve.internal. A 10.0.0.5"]


def test_a_route_host_of_a_parked_guest_is_parked_too() -> None:
    source = FakeSource(
        [make_guest(101, "wiki", ips=("10.0.0.5",))],
        routes=[{"host": "kb.pve.internal", "guest": "wiki", "port": 80, "idle": {}}],
    )
    source.states["wiki"] = WakeState.ASLEEP
    assert answers(source, "kb.pve.internal") == ["kb.pve.internal. A 127.0.0.1"]
    assert answers(source, "wiki.pve.internal") == ["wiki.pve.internal. A 127.0.0.1"]


# ---------------------------------------------------------------------- the index


def test_the_index_is_built_once_per_snapshot_and_route_set() -> None:
    source = wiki_and_friends()
    answerer = Answerer(settings(), source)
    for _ in range(5):
        answerer.respond(query("wiki.pve.internal"))
    assert answerer.builds == 1
    source.snapshot = FakeSource([make_guest(101, "wiki", ips=("10.0.0.99",))]).snapshot
    assert records(answerer.respond(query("wiki.pve.internal")).answer) == [
        "wiki.pve.internal. A 10.0.0.99"
    ]
    assert answerer.builds == 2
    first = answerer.zone().serial
    source.routes = FakeSource(
        routes=[{"host": "x.pve.internal", "guest": "wiki", "port": 1}]
    ).routes
    assert answers(source, "x.pve.internal") == ["x.pve.internal. A 10.0.0.99"]
    assert answerer.zone().serial > first  # the SOA serial grows with every build


def test_guest_names_with_dots_make_empty_parents() -> None:
    source = FakeSource([make_guest(101, "a.b", ips=("10.0.0.5",))])
    assert answers(source, "a.b.pve.internal") == ["a.b.pve.internal. A 10.0.0.5"]
    response = ask(source, "b.pve.internal")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_nodes_of_one_name_in_two_clusters_are_left_out() -> None:
    source = FakeSource(
        clusters={
            "home": ([], [make_node("pve1", ip="10.0.0.1")]),
            "lab": ([], [make_node("pve1", cluster="lab", ip="10.9.0.1")]),
        }
    )
    assert ask(source, "pve1.pve.internal").rcode() == dns.rcode.NXDOMAIN


def test_rdata_types_are_what_was_asked() -> None:
    response = ask(wiki_and_friends(), "wiki.pve.internal", "AAAA")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.AAAA]
