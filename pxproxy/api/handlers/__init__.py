"""Management API endpoints, one module each."""

from __future__ import annotations

from aiohttp import web

from ._common import CONTEXT
from .guests import get_guest, list_guests
from .health import health
from .lookup import lookup
from .metrics import metrics
from .nodes import list_nodes

__all__ = ["CONTEXT", "add_routes"]


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/health", health)
    router.add_get("/metrics", metrics)
    router.add_get("/api/v1/guests", list_guests)
    router.add_get("/api/v1/guests/{ref:.+}", get_guest)
    router.add_get("/api/v1/lookup", lookup)
    router.add_get("/api/v1/nodes", list_nodes)
