"""Activity sources for idle-watch: what another proxy carries (Traefik's metrics) and the
guest's own traffic counters, told to the route's gate."""

from .metrics_fetch import HttpMetricsFetch, MetricsFetch, MetricsUnavailable
from .traefik_metrics import ServiceFigures, parse_service_figures
from .traffic_counters import TrafficCounters
from .watch import ActivityReading, ActivityStats, ActivityWatch, source_of, traefik_service

__all__ = [
    "ActivityReading",
    "ActivityStats",
    "ActivityWatch",
    "HttpMetricsFetch",
    "MetricsFetch",
    "MetricsUnavailable",
    "ServiceFigures",
    "TrafficCounters",
    "parse_service_figures",
    "source_of",
    "traefik_service",
]
