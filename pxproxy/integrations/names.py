"""Stable names for generated objects, shared by the Traefik provider and the activity
reader that finds the same service in Traefik's metrics."""

from __future__ import annotations

import hashlib
import re

from ..config.models import RouteConfig
from ..routing.route_set import route_name

_UNSAFE = re.compile(r"[^a-z0-9-]+")


def route_slug(route: RouteConfig) -> str:
    """`wiki-example-com` for host wiki.example.com; `tcp-25565` for a TCP route, `udp-34197`
    for a UDP one. A short hash of the full name keeps two routes that slug alike apart."""
    if route.host:
        base = route.host[0].lower().replace("*.", "wildcard-")
    else:
        base = f"{route.protocol}-{(route.listen or '').rsplit(':', 1)[-1]}"
    slug = _UNSAFE.sub("-", base).strip("-")[:48] or "route"
    tag = hashlib.sha256(route_name(route).encode()).hexdigest()[:6]
    return f"{slug}-{tag}"


def traefik_service_name(route: RouteConfig) -> str:
    """The service's name inside pxproxy's provider (Traefik shows it as `<name>@http`)."""
    return f"pxproxy-{route_slug(route)}"


def traefik_router_name(route: RouteConfig) -> str:
    return f"pxproxy-{route_slug(route)}"
