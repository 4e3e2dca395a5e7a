"""Traefik's Prometheus text, read for what idle-watch needs: per service, the requests it
has served and (Traefik v2 only) the connections open to it. Transport-free.

Checked against the real Traefik 3.x: `traefik_service_requests_total{code,method,protocol,
service="<name>@<provider>"}` counts a request once it has been answered (one in flight is
not in it yet), and Traefik 3 has no per-service open-connections gauge (only
`traefik_open_connections{entrypoint,protocol}`); Traefik 2's
`traefik_service_open_connections{method,protocol,service}` is read when present.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "traefik_service_requests_total"
OPEN_CONNECTIONS = "traefik_service_open_connections"
# Traefik's name for pxproxy's own provider (its HTTP provider).
PXPROXY_PROVIDER = "http"


@dataclass(frozen=True, slots=True)
class ServiceFigures:
    """One service's figures, summed over every label but `service`."""

    requests: float = 0.0
    open_connections: float = 0.0


def _wanted(lines: Iterable[str]) -> str:
    """Only the two series we read (with their TYPE lines): a Traefik with many services
    sends megabytes of histograms, and the parser is pure Python."""
    keep = [
        line
        for line in lines
        if line.startswith((REQUESTS, OPEN_CONNECTIONS))
        or (line.startswith("# TYPE ") and line[7:].startswith((REQUESTS, OPEN_CONNECTIONS)))
    ]
    return "\n".join(keep) + "\n"


def parse_service_figures(text: str) -> dict[str, ServiceFigures]:
    """`{"<name>@<provider>": ServiceFigures}` from a /metrics answer. Raises ValueError on
    text that is not the Prometheus exposition format."""
    requests: dict[str, float] = {}
    open_connections: dict[str, float] = {}
    for family in text_string_to_metric_families(_wanted(text.splitlines())):
        for sample in family.samples:
            service = sample.labels.get("service")
            if service is None:
                continue
            if sample.name == REQUESTS:
                requests[service] = requests.get(service, 0.0) + sample.value
            elif sample.name == OPEN_CONNECTIONS:
                open_connections[service] = open_connections.get(service, 0.0) + sample.value
    return {
        name: ServiceFigures(requests.get(name, 0.0), open_connections.get(name, 0.0))
        for name in sorted({*requests, *open_connections})
    }


def service_figures(figures: Mapping[str, ServiceFigures], service: str) -> ServiceFigures:
    """The figures of `service` as a user writes it: `name@provider` names one service;
    a bare `name` matches it under any provider (summed). A service Traefik has not served
    yet has no series at all: zero."""
    if "@" in service:
        return figures.get(service, ServiceFigures())
    found = [f for name, f in figures.items() if name.partition("@")[0] == service]
    return ServiceFigures(sum(f.requests for f in found), sum(f.open_connections for f in found))
