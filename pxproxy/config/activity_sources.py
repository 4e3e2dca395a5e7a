"""Checks of routes' `activity` against the rest of the file: a route that reads Traefik's
metrics needs to know where they are, and Traefik keeps metrics for HTTP services only."""

from __future__ import annotations

from collections.abc import Iterable

from .problems import Problem
from .raw_view import RawSection

METRICS_URL_KEY = "integrations.traefik.metrics_url"


def activity_problems(root: RawSection, routes: Iterable[RawSection]) -> list[Problem]:
    integrations = root.section("integrations")
    traefik = integrations.section("traefik") if integrations is not None else None
    has_url = traefik is not None and bool(traefik.typed("metrics_url", str))
    problems: list[Problem] = []
    readers: list[str] = []
    for route in routes:
        activity = route.section("activity")
        if activity is None or activity.typed("source", str) != "traefik":
            continue
        if route.present("listen") and not route.present("host"):
            problems.append(
                Problem(
                    activity.path("source"),
                    "traefik: Traefik keeps no metrics for TCP services; use source: traffic "
                    "(the guest's own netin/netout)",
                )
            )
            continue
        readers.append(activity.path("source"))
    if readers and not has_url:
        problems.append(
            Problem(
                METRICS_URL_KEY,
                f"is required by {', '.join(readers)}: traefik (the URL of Traefik's "
                "Prometheus endpoint, e.g. http://127.0.0.1:8082/metrics)",
            )
        )
    if has_url and traefik is not None:
        url = traefik.typed("metrics_url", str) or ""
        if not url.startswith(("http://", "https://")):
            problems.append(
                Problem(traefik.path("metrics_url"), f"{url[:80]!r} is not an http(s):// URL")
            )
    return problems
