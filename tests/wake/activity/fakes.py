"""Fakes for the activity-watch tests: a gate that counts, metrics text, a scripted fetch."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from pxproxy.config.companion import TraefikOptions
from pxproxy.config.models import RouteConfig
from pxproxy.routing.route_set import RouteStore
from pxproxy.wake.activity import MetricsUnavailable
from pxproxy.wake.contract import WakeProgress, WakeState

METRICS_URL = "http://127.0.0.1:1/metrics"


class CountingGate:
    """A Gate that only counts activity() calls."""

    state = WakeState.READY
    wake_timeout_s = 1.0

    def __init__(self) -> None:
        self.activities = 0

    async def ready(self, *, wake: bool = True) -> None:
        return None

    def activity(self) -> None:
        self.activities += 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        yield

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(WakeState.READY, "ready")


class Gates:
    """gate_for(route): one CountingGate per route name."""

    def __init__(self) -> None:
        self.by_host: dict[str, CountingGate] = {}

    def __call__(self, route: RouteConfig) -> CountingGate:
        key = route.host[0] if route.host else str(route.listen)
        return self.by_host.setdefault(key, CountingGate())

    def count(self, host: str) -> int:
        gate = self.by_host.get(host)
        return gate.activities if gate is not None else 0


class ScriptedFetch:
    """Answers with `text`, or raises MetricsUnavailable while `error` is set."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.error: str | None = None
        self.urls: list[str] = []

    async def __call__(self, url: str) -> str:
        self.urls.append(url)
        if self.error is not None:
            raise MetricsUnavailable(self.error)
        return self.text


def metrics(requests: dict[str, float], open_connections: dict[str, float] | None = None) -> str:
    """Traefik's exposition text (shape taken from the real Traefik 3): requests per service
    split over two codes, as Traefik does, and Traefik 2's open-connections gauge if given."""
    lines = [
        "# HELP traefik_service_requests_total How many HTTP requests processed on a service.",
        "# TYPE traefik_service_requests_total counter",
    ]
    for service, total in requests.items():
        ok = total - total // 4
        lines.append(
            f'traefik_service_requests_total{{code="200",method="GET",protocol="http",'
            f'service="{service}"}} {ok}'
        )
        lines.append(
            f'traefik_service_requests_total{{code="404",method="GET",protocol="http",'
            f'service="{service}"}} {total - ok}'
        )
    lines += [
        "# TYPE traefik_service_requests_bytes_total counter",
        'traefik_service_requests_bytes_total{code="200",method="GET",protocol="http",'
        'service="other@file"} 123456',
        "# TYPE traefik_open_connections gauge",
        'traefik_open_connections{entrypoint="web",protocol="TCP"} 7',
    ]
    if open_connections:
        lines.append("# TYPE traefik_service_open_connections gauge")
        for service, count in open_connections.items():
            lines.append(
                f'traefik_service_open_connections{{method="GET",protocol="http",'
                f'service="{service}"}} {count}'
            )
    return "\n".join(lines) + "\n"


def options(url: str | None = METRICS_URL, interval: float = 5.0) -> TraefikOptions:
    return TraefikOptions(metrics_url=url, metrics_interval=interval)


def store(*routes: RouteConfig) -> RouteStore:
    routes_store = RouteStore()
    routes_store.publish(routes, [])
    return routes_store


def activity_route(
    host: str, guest: str, source: str, *, idle: bool = True, **activity: object
) -> RouteConfig:
    data: dict[str, object] = {
        "host": host,
        "guest": guest,
        "port": 80,
        "activity": {"source": source, **activity},
    }
    if idle:
        data["idle"] = {"timeout": 60}
    return RouteConfig.model_validate(data)
