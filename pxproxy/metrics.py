"""Prometheus metrics. One registry per daemon, so tests can run several side by side."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .dns.counters import DnsCollector, DnsCounters
from .inventory.snapshot import Snapshot
from .proxy.stats import ProxyCollector, ProxyStats
from .proxy.udp_stats import UdpCollector, UdpStats


class _InventoryCollector(Collector):
    """Gauges computed from the current snapshot at scrape time: nothing to keep in sync."""

    def __init__(self, snapshot: Callable[[], Snapshot], clusters: Callable[[], list[str]]) -> None:
        self._snapshot = snapshot
        self._clusters = clusters

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        guests = GaugeMetricFamily(
            "pxproxy_guests",
            "Guests by cluster, type and status",
            labels=["cluster", "type", "status"],
        )
        tally = Tally((g.cluster, g.type, g.status) for g in snap.guests)
        for (cluster, kind, status), n in sorted(tally.items()):
            guests.add_metric([cluster, kind, status], n)
        yield guests
        nodes = GaugeMetricFamily(
            "pxproxy_nodes", "Nodes by cluster and status", labels=["cluster", "status"]
        )
        for (cluster, status), n in sorted(
            Tally((n.cluster, n.status) for n in snap.nodes).items()
        ):
            nodes.add_metric([cluster, status], n)
        yield nodes
        age = GaugeMetricFamily(
            "pxproxy_snapshot_age_seconds",
            "Seconds since the last successful poll of each cluster",
            labels=["cluster"],
        )
        up = GaugeMetricFamily(
            "pxproxy_cluster_up",
            "1 when the last poll of the cluster succeeded",
            labels=["cluster"],
        )
        now = time.monotonic()
        for name in self._clusters():
            cs = snap.clusters.get(name)
            seconds = cs.age_s(now) if cs else None
            if seconds is not None:
                age.add_metric([name], seconds)
            up.add_metric([name], 1.0 if cs is not None and cs.ok else 0.0)
        yield age
        yield up


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.poll_duration = Histogram(
            "pxproxy_poll_duration_seconds",
            "Duration of successful poll cycles",
            ["cluster"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.poll_failures = Counter(
            "pxproxy_poll_failures", "Failed poll cycles", ["cluster"], registry=self.registry
        )
        self.poll_entries_rejected = Counter(
            "pxproxy_poll_entries_rejected",
            "Malformed /cluster/resources entries dropped, by cluster and reason class",
            ["cluster", "reason"],
            registry=self.registry,
        )
        self.api_requests = Counter(
            "pxproxy_api_requests",
            "Management API requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.lookups = Counter(
            "pxproxy_lookups",
            "Reverse lookups by kind and result",
            ["kind", "result"],
            registry=self.registry,
        )

        # The HTTP and TCP proxies' counters, plain integers read at scrape time.
        self.proxy = ProxyStats()
        # The proxy workers' counters are added when there are workers (proxy/workers.py).
        self.proxy_collector = ProxyCollector(self.proxy)
        self.registry.register(self.proxy_collector)
        # UDP routes' counters (pxproxy/proxy/udp.py bumps them per datagram), likewise.
        self.udp = UdpStats()
        self.registry.register(UdpCollector(self.udp))
        self.tcp_relayed = Counter(
            "pxproxy_tcp_relayed_bytes",
            "Bytes relayed by TCP routes, by direction",
            ["route", "direction"],
            registry=self.registry,
        )
        self.wakes = Counter(
            "pxproxy_wakes",
            "Wakes by guest and result",
            ["guest", "result"],
            registry=self.registry,
        )
        self.wake_seconds = Histogram(
            "pxproxy_wake_seconds",
            "Time from a wake's start to the guest being ready",
            registry=self.registry,
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
        )
        self.idle_stops = Counter(
            "pxproxy_idle_stops",
            "Guests stopped because they sat idle",
            ["guest"],
            registry=self.registry,
        )
        # labels() takes a lock and hashes every call; hot paths reuse the children.
        self._children: dict[tuple[str, str, str], Counter] = {}

    def _child(self, metric: Counter, a: str, b: str) -> Counter:
        key = (metric._name, a, b)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(a, b)
        return child

    def count_api(self, endpoint: str, status: int) -> None:
        self._child(self.api_requests, endpoint, str(status)).inc()

    def count_lookup(self, kind: str, result: str) -> None:
        self._child(self.lookups, kind, result).inc()

    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        """A proxied HTTP request finished (the proxy's hook)."""
        self.proxy.request(route, status, upstream_seconds)

    def connection_opened(self, route: str) -> None:
        self.proxy.connection_opened(route)

    def connection_closed(self, route: str) -> None:
        self.proxy.connection_closed(route)

    def tcp_bytes(self, route: str, to_guest: int, to_client: int) -> None:
        self._child(self.tcp_relayed, route, "to_guest").inc(to_guest)
        self._child(self.tcp_relayed, route, "to_client").inc(to_client)

    def wake_finished(self, guest: str, seconds: float, ok: bool) -> None:
        self._child(self.wakes, guest, "ok" if ok else "failed").inc()
        if ok:
            self.wake_seconds.observe(seconds)

    def idle_stopped(self, guest: str) -> None:
        self.idle_stops.labels(guest).inc()

    def watch_inventory(
        self, snapshot: Callable[[], Snapshot], clusters: Callable[[], list[str]]
    ) -> None:
        self.registry.register(_InventoryCollector(snapshot, clusters))

    def watch_dns(self, counters: Callable[[], DnsCounters | None]) -> None:
        """The DNS responder's counters (None while `dns:` is off), read at scrape time."""
        self.registry.register(DnsCollector(counters))

    def on_poll(self, cluster: str, duration_s: float, ok: bool) -> None:
        if ok:
            self.poll_duration.labels(cluster).observe(duration_s)
        else:
            self.poll_failures.labels(cluster).inc()

    def on_rejected(self, cluster: str, reason: str, count: int) -> None:
        """A poll dropped `count` entries for `reason` (the poller's hook)."""
        self._child(self.poll_entries_rejected, cluster, reason).inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
