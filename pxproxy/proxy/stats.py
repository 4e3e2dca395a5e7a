"""The proxy's counters: plain integers bumped on the data path, turned into Prometheus
metrics only when /metrics is scraped.

prometheus_client's `inc()`/`observe()` take a lock and look up label children on every call;
per request that was 6.6 % of the proxy's CPU. Here a request costs a dict lookup and a few
integer additions.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class RouteStats:
    __slots__ = ("buckets", "by_status", "open", "upstream_count", "upstream_sum")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        # Per bucket (not cumulative), the last one for +Inf.
        self.buckets = [0] * (len(UPSTREAM_BUCKETS) + 1)
        self.upstream_count = 0
        self.upstream_sum = 0.0
        self.open = 0


class ProxyStats:
    """Counters by route label; the ProxyMetrics hooks of the HTTP and TCP proxies."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteStats] = {}

    def _route(self, route: str) -> RouteStats:
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats()
        return stats

    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        stats = self._route(route)
        by_status = stats.by_status
        by_status[status] = by_status.get(status, 0) + 1
        if upstream_seconds is not None:
            stats.buckets[bisect.bisect_left(UPSTREAM_BUCKETS, upstream_seconds)] += 1
            stats.upstream_count += 1
            stats.upstream_sum += upstream_seconds

    def connection_opened(self, route: str) -> None:
        self._route(route).open += 1

    def connection_closed(self, route: str) -> None:
        self._route(route).open -= 1

    def add(self, other: ProxyStats, *, connections: bool = True) -> None:
        """Add `other`'s counters to these (open connections too, unless told not to)."""
        for name, theirs in other.routes.items():
            ours = self._route(name)
            for status, count in theirs.by_status.items():
                ours.by_status[status] = ours.by_status.get(status, 0) + count
            ours.buckets = [a + b for a, b in zip(ours.buckets, theirs.buckets, strict=True)]
            ours.upstream_count += theirs.upstream_count
            ours.upstream_sum += theirs.upstream_sum
            if connections:
                ours.open += theirs.open


def no_others() -> Iterable[ProxyStats]:
    return ()


class ProxyCollector(Collector):
    """pxproxy_proxy_requests, pxproxy_upstream_seconds and pxproxy_proxy_connections: this
    process's counters, and `others` (the proxy workers', proxy/workers.py) added to them."""

    def __init__(
        self, stats: ProxyStats, others: Callable[[], Iterable[ProxyStats]] = no_others
    ) -> None:
        self._stats = stats
        self.others = others

    def collect(self) -> Iterator[Metric]:
        others = list(self.others())
        total = self._stats
        if others:
            total = ProxyStats()
            for part in (self._stats, *others):
                total.add(part)
        routes = sorted(total.routes.items())
        requests = CounterMetricFamily(
            "pxproxy_proxy_requests",
            "Proxied requests by route and status",
            labels=["route", "status"],
        )
        upstream = HistogramMetricFamily(
            "pxproxy_upstream_seconds",
            "Time from forwarding a request to the upstream's response headers",
            labels=["route"],
        )
        connections = GaugeMetricFamily(
            "pxproxy_proxy_connections",
            "Open proxied connections (requests in flight, WebSockets, TCP relays) by route",
            labels=["route"],
        )
        for route, stats in routes:
            for status, count in sorted(stats.by_status.items()):
                requests.add_metric([route, str(status)], count)
            if stats.upstream_count:
                cumulative, running = [], 0
                for bound, count in zip(
                    (*UPSTREAM_BUCKETS, float("inf")), stats.buckets, strict=True
                ):
                    running += count
                    cumulative.append((_le(bound), running))
                upstream.add_metric([route], cumulative, stats.upstream_sum)
            connections.add_metric([route], stats.open)
        yield requests
        yield upstream
        yield connections


def _le(bound: float) -> str:
    # As prometheus_client writes bucket bounds: "0.001", "1.0", "+Inf".
    return "+Inf" if bound == float("inf") else repr(float(bound))
