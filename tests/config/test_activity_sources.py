"""Routes' activity sources checked against the rest of the file."""

from __future__ import annotations

from .helpers import parse, problems_of, with_routes

TRAEFIK_ROUTE = """
- host: wiki.example.com
  guest: wiki
  port: 80
  idle: {timeout: 10m}
  activity: {source: traefik}
"""


def test_a_traefik_source_without_a_metrics_url_names_the_key() -> None:
    lines = problems_of(with_routes(TRAEFIK_ROUTE))
    assert lines == [
        "integrations.traefik.metrics_url: is required by routes[0].activity.source: traefik "
        "(the URL of Traefik's Prometheus endpoint, e.g. http://127.0.0.1:8082/metrics)"
    ]


def test_with_the_metrics_url_the_route_is_accepted() -> None:
    extra = "integrations: {traefik: {metrics_url: 'http://127.0.0.1:8082/metrics'}}\n"
    config = parse(with_routes(TRAEFIK_ROUTE, extra))
    assert config.routes[0].activity.source == "traefik"
    assert config.integrations.traefik.metrics_url == "http://127.0.0.1:8082/metrics"


def test_a_metrics_url_must_be_http() -> None:
    extra = "integrations: {traefik: {metrics_url: '127.0.0.1:8082/metrics'}}\n"
    assert problems_of(with_routes(TRAEFIK_ROUTE, extra)) == [
        "integrations.traefik.metrics_url: '127.0.0.1:8082/metrics' is not an http(s):// URL"
    ]


def test_a_tcp_route_cannot_read_traefik_metrics() -> None:
    extra = "integrations: {traefik: {metrics_url: 'http://127.0.0.1:8082/metrics'}}\n"
    route = """
    - {listen: "127.0.0.1:25565", guest: mc, port: 25565, activity: {source: traefik}}
    """
    assert problems_of(with_routes(route, extra)) == [
        "routes[0].activity.source: traefik: Traefik keeps no metrics for TCP services; use "
        "source: traffic (the guest's own netin/netout)"
    ]


def test_traffic_and_proxy_sources_need_nothing_else() -> None:
    routes = """
    - {host: a.example.com, guest: a, port: 80, activity: {source: traffic, threshold: 100}}
    - {listen: "127.0.0.1:25565", guest: mc, port: 25565, activity: {source: traffic}}
    - {host: b.example.com, guest: b, port: 80}
    """
    config = parse(with_routes(routes))
    assert [r.activity.source for r in config.routes] == ["traffic", "traffic", "proxy"]
    assert config.routes[0].activity.threshold == 100
