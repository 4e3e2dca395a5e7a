"""The responder over real sockets: UDP and TCP on one port, IPv4 and IPv6, several queries
per TCP connection, the TCP bounds, malformed floods beside good queries, the rate limit on a
fake clock, the metrics, and a clean close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from pxproxy.dns.counters import DnsCounters
from pxproxy.dns.server import DnsResponder
from pxproxy.metrics import Metrics
from tests.support import wait_for

from .zone_fixtures import FakeSource, query, records, settings, wiki_and_friends

TIMEOUT_S = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def started(responder: DnsResponder) -> DnsResponder:
    await responder.start()
    return responder


@pytest.fixture
async def responder() -> AsyncIterator[DnsResponder]:
    server = await started(DnsResponder(settings(), wiki_and_friends()))
    yield server
    await server.close()


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return len(wire).to_bytes(2, "big") + wire


async def read_framed(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await reader.readexactly(2), "big")
    return dns.message.from_wire(await reader.readexactly(size))


async def test_udp_and_tcp_on_one_port(responder: DnsResponder) -> None:
    [(host, port)] = responder.bound
    assert host == "127.0.0.1"
    assert port > 0
    over_udp = await dns.asyncquery.udp(query("wiki.pve.internal"), host, port=port, timeout=5)
    over_tcp = await dns.asyncquery.tcp(query("wiki.pve.internal"), host, port=port, timeout=5)
    for response in (over_udp, over_tcp):
        assert records(response.answer) == ["wiki.pve.internal. A 10.0.0.5"]
    assert responder.counters.queries == {("A", "NOERROR"): 2}


async def test_ipv6_and_localhost() -> None:
    v6 = await started(DnsResponder(settings(listen="[::1]:0"), wiki_and_friends()))
    both = await started(DnsResponder(settings(listen="localhost:0"), wiki_and_friends()))
    try:
        response = await dns.asyncquery.udp(
            query("wiki.pve.internal", "AAAA"), "::1", port=v6.port, timeout=5
        )
        assert records(response.answer) == ["wiki.pve.internal. AAAA fd00::5"]
        # Every address localhost resolves to here (/etc/hosts may leave ::1 out), one port.
        hosts = [h for h, _ in both.bound]
        assert "127.0.0.1" in hosts
        assert set(hosts) <= {"127.0.0.1", "::1"}
        assert len({p for _, p in both.bound}) == 1
        for host in hosts:
            got = await dns.asyncquery.tcp(
                query("db.pve.internal"), host, port=both.port, timeout=5
            )
            assert records(got.answer) == ["db.pve.internal. A 10.0.0.6"]
    finally:
        await v6.close()
        await both.close()


async def test_several_queries_per_tcp_connection_then_the_idle_timeout() -> None:
    server = await started(DnsResponder(settings(), wiki_and_friends(), tcp_idle_timeout_s=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        names = ["wiki.pve.internal", "db.pve.internal", "nope.pve.internal"]
        # All three in one write, the last one split across two.
        data = b"".join(framed(query(n)) for n in names)
        writer.write(data[:-5])
        await writer.drain()
        writer.write(data[-5:])
        got = [await asyncio.wait_for(read_framed(reader), TIMEOUT_S) for _ in names]
        assert [str(m.question[0].name) for m in got] == [n + "." for n in names]
        assert [m.rcode() for m in got] == [dns.rcode.NOERROR] * 2 + [dns.rcode.NXDOMAIN]
        assert server.counters.tcp_connections == 1
        # Idle: the responder closes the connection.
        assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
        await wait_for(lambda: server.counters.tcp_connections == 0, TIMEOUT_S, "the close")
        writer.close()
    finally:
        await server.close()


async def test_tcp_connections_are_bounded() -> None:
    server = await started(DnsResponder(settings(), wiki_and_friends(), max_tcp_connections=2))
    writers = []
    try:
        for _ in range(2):
            _r, w = await asyncio.open_connection("127.0.0.1", server.port)
            writers.append(w)
        await wait_for(lambda: server.counters.tcp_connections == 2, TIMEOUT_S, "two open")
        reader, w = await asyncio.open_connection("127.0.0.1", server.port)
        writers.append(w)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S)
        assert server.counters.tcp_refused == 1
        assert server.counters.tcp_connections == 2
    finally:
        for w in writers:
            w.close()
        await server.close()


async def test_a_tcp_message_too_big_for_a_query_closes_the_connection(
    responder: DnsResponder,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", responder.port)
    writer.write((60000).to_bytes(2, "big") + b"x" * 100)
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), TIMEOUT_S)
    writer.close()
    assert responder.counters.malformed == 1


async def test_malformed_floods_are_counted_while_good_queries_are_answered(
    responder: DnsResponder,
) -> None:
    port = responder.port
    # Too short, a response, a header with 4,608 questions and none there.
    garbage = [b"", b"\x01", b"\xff" * 40, b"\x00\x01\x80\x00" + b"\x00" * 8]
    garbage.append(b"\x12\x00\x00\x01" * 150)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setblocking(False)
    counters = responder.counters
    try:

        async def flood_it() -> None:
            for sent in range(len(garbage), 101, len(garbage)):
                for data in garbage:
                    flood.sendto(data, ("127.0.0.1", port))
                # Paced, so that the kernel's socket buffer never drops a datagram.
                await wait_for(_malformed_is(counters, sent), TIMEOUT_S, "the round")

        good = dns.asyncquery.udp(query("wiki.pve.internal"), "127.0.0.1", port=port, timeout=5)
        response, _ = await asyncio.gather(good, flood_it())
        assert records(response.answer) == ["wiki.pve.internal. A 10.0.0.5"]
        assert counters.malformed == 100
        assert responder.counters.queries == {("A", "NOERROR"): 1}
        # Garbage gets no answer at all (the flood socket got nothing back).
        with pytest.raises(BlockingIOError):
            flood.recv(4096)
    finally:
        flood.close()


async def test_rate_limit_per_client_on_a_fake_clock() -> None:
    clock = Clock()
    server = await started(
        DnsResponder(
            settings(rate_limit={"per_client": 1, "burst": 3}), wiki_and_friends(), clock=clock
        )
    )
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        target = ("127.0.0.1", server.port)
        for i in range(5):
            message = query("wiki.pve.internal")
            message.id = i
            client.sendto(message.to_wire(), target)
        await wait_for(lambda: server.counters.rate_limited == 2, TIMEOUT_S, "two limited")
        got = [dns.message.from_wire(await loop.sock_recv(client, 4096)).id for _ in range(3)]
        assert got == [0, 1, 2]
        with pytest.raises(BlockingIOError):  # the two over the limit had no answer
            client.recv(4096)
        # Another client is not limited by this one's use.
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.setblocking(False)
        other.bind(("127.0.0.2", 0))
        other.sendto(query("db.pve.internal").to_wire(), target)
        answer = dns.message.from_wire(await loop.sock_recv(other, 4096))
        other.close()
        assert records(answer.answer) == ["db.pve.internal. A 10.0.0.6"]
        # One second later: one more token.
        clock.now += 1.0
        client.sendto(query("wiki.pve.internal").to_wire(), target)
        client.sendto(query("wiki.pve.internal").to_wire(), target)
        await wait_for(lambda: server.counters.rate_limited == 3, TIMEOUT_S, "a third limited")
        assert server.counters.queries == {("A", "NOERROR"): 5}
        # TCP queries draw on the same bucket: the first is dropped, the next (a token later)
        # is the first answer on the connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        dropped, later = query("wiki.pve.internal"), query("db.pve.internal")
        writer.write(framed(dropped))
        await wait_for(lambda: server.counters.rate_limited == 4, TIMEOUT_S, "a TCP one limited")
        clock.now += 1.0
        writer.write(framed(later))
        first = await asyncio.wait_for(read_framed(reader), TIMEOUT_S)
        assert first.id == later.id
        writer.close()
    finally:
        client.close()
        await server.close()


async def test_metrics(responder: DnsResponder) -> None:
    metrics = Metrics()
    current: list[DnsResponder | None] = [None]
    metrics.watch_dns(lambda: current[0].counters if current[0] else None)
    assert b"pxproxy_dns" not in metrics.render()  # off: no DNS metrics at all
    current[0] = responder
    await dns.asyncquery.udp(
        query("nope.pve.internal"), "127.0.0.1", port=responder.port, timeout=5
    )
    responder.counters.malformed += 2
    text = metrics.render().decode()
    assert 'pxproxy_dns_queries_total{rcode="NXDOMAIN",type="A"} 1.0' in text
    assert 'pxproxy_dns_dropped_total{reason="malformed"} 2.0' in text
    assert 'pxproxy_dns_dropped_total{reason="rate_limited"} 0.0' in text
    assert "pxproxy_dns_tcp_connections 0.0" in text


async def test_close_frees_the_port_and_ends_connections() -> None:
    server = await started(DnsResponder(settings(), wiki_and_friends()))
    port = server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await wait_for(lambda: server.counters.tcp_connections == 1, TIMEOUT_S, "the connection")
    await server.close()
    assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
    writer.close()
    assert server.bound == []
    again = await started(DnsResponder(settings(listen=f"127.0.0.1:{port}"), FakeSource()))
    assert again.port == port
    await again.close()


def _malformed_is(counters: DnsCounters, n: int) -> Callable[[], bool]:
    return lambda: counters.malformed == n


def no_tasks_of(module: str) -> Callable[[], bool]:
    return lambda: not [t for t in asyncio.all_tasks() if module in repr(t.get_coro())]


async def test_the_responder_runs_no_tasks(responder: DnsResponder) -> None:
    await dns.asyncquery.tcp(
        query("wiki.pve.internal"), "127.0.0.1", port=responder.port, timeout=5
    )
    assert no_tasks_of("pxproxy.dns")()
