"""Management API endpoints, one module each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from ._common import CONTEXT
from .guests import get_guest, list_guests
from .health import health
from .lookup import lookup
from .metrics import metrics
from .nodes import list_nodes
from .routes import list_routes

__all__ = ["CONTEXT", "ROUTES", "Route"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    open: bool = False  # answered without authentication


ROUTES = (
    Route("GET", "/health", health, open=True),
    Route("GET", "/metrics", metrics),
    Route("GET", "/api/v1/guests", list_guests),
    Route("GET", "/api/v1/guests/{ref:.+}", get_guest),
    Route("GET", "/api/v1/lookup", lookup),
    Route("GET", "/api/v1/nodes", list_nodes),
    Route("GET", "/api/v1/routes", list_routes),
)
