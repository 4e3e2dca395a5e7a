"""Counters of wakes and idle stops, and the hook the metrics module plugs into."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# Enough recent wake durations for a percentile on a status page, bounded for a long-lived daemon.
RECENT_DURATIONS = 256


class WakeObserver(Protocol):
    """Told about every finished wake and idle stop; `pxproxy.metrics.Metrics` fits."""

    def wake_finished(self, guest: str, seconds: float, ok: bool) -> None: ...

    def idle_stopped(self, guest: str) -> None: ...


@dataclass(slots=True)
class WakeStats:
    """Totals since start; `guest` labels are the refs as configured."""

    wakes_started: int = 0
    wakes_ok: int = 0
    wake_failures: int = 0
    idle_stops: int = 0
    idle_stop_failures: int = 0
    # Wakes that failed because Proxmox went away, found running and serving by the next poll.
    wakes_settled: int = 0
    # idle.before_stop: commands begun; those that failed (non-zero exit, timeout, no exec
    # path; the stop went ahead); stops abandoned because the guest was used meanwhile.
    before_stops: int = 0
    before_stop_failures: int = 0
    before_stops_abandoned: int = 0
    wake_durations_s: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_DURATIONS))
    failures_by_guest: dict[str, int] = field(default_factory=dict)
    idle_stops_by_guest: dict[str, int] = field(default_factory=dict)

    def wake_started(self, guest: str) -> None:
        self.wakes_started += 1

    def wake_finished(self, guest: str, seconds: float, ok: bool) -> None:
        if ok:
            self.wakes_ok += 1
            self.wake_durations_s.append(seconds)
        else:
            self.wake_failures += 1
            self.failures_by_guest[guest] = self.failures_by_guest.get(guest, 0) + 1

    def wake_settled(self, guest: str) -> None:
        self.wakes_settled += 1

    def idle_stopped(self, guest: str) -> None:
        self.idle_stops += 1
        self.idle_stops_by_guest[guest] = self.idle_stops_by_guest.get(guest, 0) + 1

    def idle_stop_failed(self, guest: str) -> None:
        self.idle_stop_failures += 1

    def before_stop_started(self, guest: str) -> None:
        self.before_stops += 1

    def before_stop_failed(self, guest: str) -> None:
        self.before_stop_failures += 1

    def before_stop_abandoned(self, guest: str) -> None:
        self.before_stops_abandoned += 1


class BeforeStopCollector(Collector):
    """pxproxy_before_stops_total by result, read from the wake counters at scrape time."""

    def __init__(self, stats: Callable[[], WakeStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        family = CounterMetricFamily(
            "pxproxy_before_stops",
            "idle.before_stop commands: started; failed (the stop went ahead); abandoned "
            "(the guest was used during the command or the grace, so it stayed up)",
            labels=["result"],
        )
        family.add_metric(["started"], stats.before_stops)
        family.add_metric(["failed"], stats.before_stop_failures)
        family.add_metric(["abandoned"], stats.before_stops_abandoned)
        yield family
