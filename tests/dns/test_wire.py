"""The bytes around answering: what is dropped and counted, NOTIMP from the header, TC over
UDP, and random bytes that never crash the responder."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproxy.dns.answer import Answerer
from pxproxy.dns.counters import DnsCounters
from pxproxy.dns.wire import WireHandler
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.wake.contract import WakeState
from tests.builders import make_guest

from .zone_fixtures import FakeSource, query, wiki_and_friends
from .zone_fixtures import settings as dns_settings


def handler(source: FakeSource | None = None) -> WireHandler:
    return WireHandler(Answerer(dns_settings(), source or wiki_and_friends()), DnsCounters())


GOOD = query("wiki.pve.internal").to_wire()


def two_questions() -> bytes:
    message = query("wiki.pve.internal")
    message.question.append(
        dns.rrset.RRset(message.question[0].name.parent(), dns.rdataclass.IN, dns.rdatatype.A)
    )
    return message.to_wire()


def a_response() -> bytes:
    return dns.message.make_response(query("wiki.pve.internal")).to_wire()


def no_question() -> bytes:
    return struct.pack("!HHHHHH", 7, 0, 0, 0, 0, 0)


def test_malformed_messages_are_dropped_and_counted() -> None:
    wire = handler()
    bad = [b"", b"\x00" * 11, GOOD[:-3], GOOD[:14], a_response(), two_questions(), no_question()]
    bad.append(GOOD[:12] + b"\xff" * 40)  # a label longer than the message
    for message in bad:
        assert wire.handle(message, udp=True) is None, message
    assert wire.counters.malformed == len(bad)
    assert wire.counters.queries == {}
    # ...and the next good query is answered.
    out = wire.handle(GOOD, udp=True)
    assert out is not None
    assert dns.message.from_wire(out).rcode() == dns.rcode.NOERROR
    assert wire.counters.queries == {("A", "NOERROR"): 1}


def test_other_opcodes_get_notimp_from_the_header_alone() -> None:
    header = struct.pack("!HHHHHH", 0x1234, (5 << 11) | dns.flags.RD, 1, 0, 0, 0)  # UPDATE
    out = handler().handle(header + b"\x07garbage", udp=True)
    assert out is not None
    ident, flags, *counts = struct.unpack("!HHHHHH", out)
    assert ident == 0x1234
    assert flags & dns.flags.QR
    assert (flags >> 11) & 0xF == 5
    assert flags & dns.flags.RD
    assert flags & 0xF == dns.rcode.NOTIMP
    assert counts == [0, 0, 0, 0]


def test_counted_by_type_and_rcode() -> None:
    wire = handler()
    for name, rdtype in [
        ("wiki.pve.internal", "A"),
        ("wiki.pve.internal", "A"),
        ("nope.pve.internal", "AAAA"),
        ("example.com", "A"),
        ("_80._tcp.wiki.pve.internal", "SRV"),
        ("wiki.pve.internal", "TYPE65280"),
    ]:
        assert wire.handle(query(name, rdtype).to_wire(), udp=True) is not None
    assert wire.counters.queries == {
        ("A", "NOERROR"): 2,
        ("AAAA", "NXDOMAIN"): 1,
        ("A", "REFUSED"): 1,
        ("SRV", "NOERROR"): 1,
        ("other", "NOERROR"): 1,  # a client cannot mint metric labels
    }


def big_source() -> FakeSource:
    ips = tuple(f"10.1.{i // 250}.{i % 250 + 1}" for i in range(60))
    return FakeSource([make_guest(101, "big", ips=ips)])


def test_udp_answers_over_512_bytes_are_truncated() -> None:
    wire = handler(big_source())
    plain = query("big.pve.internal").to_wire()
    out = wire.handle(plain, udp=True)
    assert out is not None
    assert len(out) <= 512
    assert dns.message.from_wire(out).flags & dns.flags.TC
    assert wire.counters.truncated == 1
    # Over TCP: the whole answer.
    full = wire.handle(plain, udp=False)
    assert full is not None
    assert len(dns.message.from_wire(full).answer[0]) == 60
    # With EDNS and a larger buffer, it fits in one datagram.
    edns = query("big.pve.internal", use_edns=0, payload=4096).to_wire()
    fits = wire.handle(edns, udp=True)
    assert fits is not None
    assert 512 < len(fits) <= 1232
    assert not dns.message.from_wire(fits).flags & dns.flags.TC
    assert wire.counters.truncated == 1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    wire = handler()
    out = wire.handle(data, udp=True)
    if out is not None:
        assert len(out) <= 1232
    assert wire.counters.errors == 0
    total = wire.counters.malformed + sum(wire.counters.queries.values())
    assert total == 1  # dropped or answered, never both, never neither


@settings(max_examples=500, deadline=None)
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255), st.integers(12, len(GOOD)))
def test_mutated_queries_never_crash(position: int, value: int, cut: int) -> None:
    mutated = bytearray(GOOD)
    mutated[position] = value
    wire = handler()
    wire.handle(bytes(mutated[:cut]), udp=True)
    wire.handle(bytes(mutated[:cut]), udp=False)
    assert wire.counters.errors == 0
    assert wire.counters.malformed + sum(wire.counters.queries.values()) == 2


# ---------------------------------------------------------------------- the answer cache


def test_a_cached_answer_has_the_query_id_case_and_rd() -> None:
    wire = handler()
    first = query("wiki.pve.internal")
    assert wire.handle(first.to_wire(), udp=True) is not None
    second = query("WIKI.Pve.Internal")
    second.id = 4321
    second.flags &= ~dns.flags.RD
    out = wire.handle(second.to_wire(), udp=True)
    assert wire.cache_hits == 1
    assert out is not None
    response = dns.message.from_wire(out)
    assert response.id == 4321
    assert not response.flags & dns.flags.RD
    assert response.flags & dns.flags.AA
    assert str(response.question[0].name) == "WIKI.Pve.Internal."
    assert [str(r.name) for r in response.answer] == ["WIKI.Pve.Internal."]
    assert wire.counters.queries == {("A", "NOERROR"): 2}


def test_the_cache_follows_gates_endpoints_and_the_snapshot() -> None:
    source = wiki_and_friends()
    wire = handler(source)

    def address() -> list[str]:
        out = wire.handle(query("wiki.pve.internal").to_wire(), udp=True)
        assert out is not None
        return [rd.to_text() for rrset in dns.message.from_wire(out).answer for rd in rrset]

    assert address() == address() == ["10.0.0.5"]
    source.states["wiki"] = WakeState.ASLEEP
    assert address() == address() == ["127.0.0.1"]
    source.endpoints = ProxyEndpoints(("127.0.0.9", 8080))
    assert address() == ["127.0.0.9"]
    source.states["wiki"] = WakeState.READY
    source.snapshot = FakeSource([make_guest(101, "wiki", ips=("10.0.0.77",))]).snapshot
    assert address() == address() == ["10.0.0.77"]
    assert wire.cache_hits == 3


def test_edns_shapes_are_cached_apart() -> None:
    wire = handler(big_source())
    plain = query("big.pve.internal").to_wire()
    edns = query("big.pve.internal", use_edns=0, payload=4096).to_wire()
    padded = query("big.pve.internal", use_edns=0, payload=4096, pad=128)
    for message in (plain, edns, padded.to_wire(), edns):
        assert wire.handle(message, udp=True) is not None
    assert wire.cache_hits == 1  # only the repeated EDNS query
    small = wire.handle(plain, udp=True)  # truncated answers are never cached
    assert small is not None
    assert dns.message.from_wire(small).flags & dns.flags.TC
    assert wire.cache_hits == 1
    tcp = wire.handle(plain, udp=False)
    assert tcp is not None
    assert len(dns.message.from_wire(tcp).answer[0]) == 60


@settings(max_examples=300, deadline=None)
@given(st.integers(12, len(GOOD) - 1), st.integers(0, 255))
def test_a_warm_cache_answers_mutated_queries_as_the_full_path_does(
    position: int, value: int
) -> None:
    mutated = bytearray(GOOD)
    mutated[position] = value
    warm, cold = handler(), handler()
    warm.handle(GOOD, udp=True)
    warm.handle(bytes(mutated), udp=True)  # may fill the cache with its own answer
    got = warm.handle(bytes(mutated), udp=True)
    expected = cold.handle(bytes(mutated), udp=True)
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        a, b = dns.message.from_wire(got), dns.message.from_wire(expected)
        assert (a.id, a.flags, a.rcode(), a.question) == (b.id, b.flags, b.rcode(), b.question)
        assert [r.to_text() for r in a.answer] == [r.to_text() for r in b.answer]
