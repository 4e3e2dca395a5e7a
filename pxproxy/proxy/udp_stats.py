"""UDP routes' counters: plain integers bumped per datagram, turned into Prometheus metrics
only when /metrics is scraped (a relay moves tens of thousands of datagrams a second; a
labelled `inc()` each would cost more than the relaying)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Why a datagram from a client was not relayed.
DropReason = Literal[
    "sessions_full",  # the route has udp.max_sessions clients already
    "buffer_full",  # the wake buffer (udp.buffer_datagrams / buffer_bytes) is full
    "wake_failed",  # buffered while the guest woke, and the wake failed or timed out
    "no_upstream",  # the guest has no address (or is unknown, or ambiguous)
    "send_failed",  # no socket to the guest could be opened
    "congested",  # a socket's send buffer is full (either direction)
]
DROP_REASONS: tuple[DropReason, ...] = (
    "sessions_full",
    "buffer_full",
    "wake_failed",
    "no_upstream",
    "send_failed",
    "congested",
)


class UdpRouteStats:
    """One route's counters; the relay holds on to its route's and bumps the fields."""

    __slots__ = (
        "bytes_to_client",
        "bytes_to_guest",
        "datagrams_to_client",
        "datagrams_to_guest",
        "dropped",
        "guest_errors",
        "sessions",
        "sessions_opened",
    )

    def __init__(self) -> None:
        self.datagrams_to_guest = 0
        self.datagrams_to_client = 0
        self.bytes_to_guest = 0
        self.bytes_to_client = 0
        self.sessions = 0  # open now
        self.sessions_opened = 0
        self.dropped: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        # ICMP errors the guest side sent back (port unreachable: nothing listens there).
        self.guest_errors = 0

    def drop(self, reason: DropReason, count: int = 1) -> None:
        self.dropped[reason] += count


class UdpStats:
    """Counters by route label (`udp:<listen>`)."""

    def __init__(self) -> None:
        self.routes: dict[str, UdpRouteStats] = {}

    def route(self, label: str) -> UdpRouteStats:
        stats = self.routes.get(label)
        if stats is None:
            stats = self.routes[label] = UdpRouteStats()
        return stats


class UdpCollector(Collector):
    """pxproxy_udp_datagrams, _bytes, _sessions, _sessions_opened, _dropped, _guest_errors."""

    def __init__(self, stats: UdpStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        datagrams = CounterMetricFamily(
            "pxproxy_udp_datagrams",
            "Datagrams relayed by UDP routes, by direction",
            labels=["route", "direction"],
        )
        relayed = CounterMetricFamily(
            "pxproxy_udp_relayed_bytes",
            "Bytes relayed by UDP routes, by direction",
            labels=["route", "direction"],
        )
        sessions = GaugeMetricFamily(
            "pxproxy_udp_sessions",
            "Open UDP sessions (one per client address) by route",
            labels=["route"],
        )
        opened = CounterMetricFamily(
            "pxproxy_udp_sessions_opened",
            "UDP sessions opened by route",
            labels=["route"],
        )
        dropped = CounterMetricFamily(
            "pxproxy_udp_dropped_datagrams",
            "Datagrams from clients not relayed, by route and reason",
            labels=["route", "reason"],
        )
        errors = CounterMetricFamily(
            "pxproxy_udp_guest_errors",
            "ICMP errors from the guest side (nothing listening, unreachable) by route",
            labels=["route"],
        )
        for route, stats in sorted(self._stats.routes.items()):
            datagrams.add_metric([route, "to_guest"], stats.datagrams_to_guest)
            datagrams.add_metric([route, "to_client"], stats.datagrams_to_client)
            relayed.add_metric([route, "to_guest"], stats.bytes_to_guest)
            relayed.add_metric([route, "to_client"], stats.bytes_to_client)
            sessions.add_metric([route], stats.sessions)
            opened.add_metric([route], stats.sessions_opened)
            for reason, count in stats.dropped.items():
                dropped.add_metric([route, reason], count)
            errors.add_metric([route], stats.guest_errors)
        yield datagrams
        yield relayed
        yield sessions
        yield opened
        yield dropped
        yield errors
