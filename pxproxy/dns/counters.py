"""What the responder counts, as plain attributes (tests read them) and as Prometheus metrics
computed at scrape time (metrics.py registers `DnsCollector`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import dns.rcode
import dns.rdatatype
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Query types named in the metrics; any other is "other", so a client cannot mint labels.
_NAMED_TYPES = frozenset(
    dns.rdatatype.to_text(t)
    for t in (
        dns.rdatatype.A,
        dns.rdatatype.AAAA,
        dns.rdatatype.ANY,
        dns.rdatatype.SRV,
        dns.rdatatype.PTR,
        dns.rdatatype.SOA,
        dns.rdatatype.NS,
        dns.rdatatype.TXT,
        dns.rdatatype.MX,
        dns.rdatatype.CNAME,
        dns.rdatatype.HTTPS,
        dns.rdatatype.SVCB,
        dns.rdatatype.CAA,
        dns.rdatatype.AXFR,
        dns.rdatatype.IXFR,
    )
)


def type_label(rdtype: dns.rdatatype.RdataType) -> str:
    text = dns.rdatatype.to_text(rdtype)
    return text if text in _NAMED_TYPES else "other"


def rcode_label(rcode: dns.rcode.Rcode) -> str:
    return dns.rcode.to_text(rcode)


@dataclass(slots=True)
class DnsCounters:
    # (query type, rcode) as numbers -> answers sent: labels are made at scrape time, not
    # per query (turning the enums into text was 9 % of the responder's time under load).
    raw: Counter[tuple[int, int]] = field(default_factory=Counter)
    malformed: int = 0  # dropped: not a DNS query we could parse (or not a query at all)
    rate_limited: int = 0  # dropped: the client was over its rate
    truncated: int = 0  # UDP answers sent with TC (too big for 512 bytes or the EDNS size)
    errors: int = 0  # dropped: answering failed (a bug; logged with its traceback)
    tcp_refused: int = 0  # TCP connections closed at once: too many open
    tcp_connections: int = 0  # open now

    def answered(self, rdtype: dns.rdatatype.RdataType, rcode: dns.rcode.Rcode) -> None:
        self.raw[(rdtype, rcode)] += 1

    @property
    def queries(self) -> Counter[tuple[str, str]]:
        """(query type, rcode) -> answers sent; a query dropped answers nothing."""
        out: Counter[tuple[str, str]] = Counter()
        for (rdtype, rcode), n in self.raw.items():
            out[
                (
                    type_label(dns.rdatatype.RdataType.make(rdtype)),
                    rcode_label(dns.rcode.Rcode.make(rcode)),
                )
            ] += n
        return out

    def by_rcode(self, rcode: str) -> int:
        return sum(n for (_, code), n in self.queries.items() if code == rcode)


class DnsCollector(Collector):
    """The counters of the running responder (None while DNS is off), read at scrape time."""

    def __init__(self, counters: Callable[[], DnsCounters | None]) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        counters = self._counters()
        if counters is None:
            return
        queries = CounterMetricFamily(
            "pxproxy_dns_queries",
            "DNS queries answered, by type and rcode",
            labels=["type", "rcode"],
        )
        for (rdtype, rcode), n in sorted(counters.queries.items()):
            queries.add_metric([rdtype, rcode], n)
        yield queries
        dropped = CounterMetricFamily(
            "pxproxy_dns_dropped", "DNS messages dropped unanswered, by reason", labels=["reason"]
        )
        dropped.add_metric(["malformed"], counters.malformed)
        dropped.add_metric(["rate_limited"], counters.rate_limited)
        dropped.add_metric(["error"], counters.errors)
        yield dropped
        yield CounterMetricFamily(
            "pxproxy_dns_truncated", "UDP answers sent truncated (TC)", value=counters.truncated
        )
        yield CounterMetricFamily(
            "pxproxy_dns_tcp_refused",
            "DNS TCP connections closed at once because too many were open",
            value=counters.tcp_refused,
        )
        yield GaugeMetricFamily(
            "pxproxy_dns_tcp_connections",
            "Open DNS TCP connections",
            value=counters.tcp_connections,
        )
