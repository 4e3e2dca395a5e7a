"""Management API endpoints, one module each."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

from ._common import CONTEXT
from .api_index import api_index
from .audit_trail import audit_trail
from .events import events
from .guest_streams import (
    exec_in_guest,
    exec_on_node,
    journal_in_guest,
    tail_in_guest,
    tail_on_node,
)
from .guests import get_guest, list_guests
from .health import health
from .integrations import ansible_inventory_json, prometheus_targets, traefik_config
from .lookup import lookup
from .me import who_am_i
from .metrics import metrics
from .node_journal import node_journal
from .nodes import list_nodes
from .openapi import openapi_document
from .power import guest_power
from .routes import list_routes
from .stats import guest_stats, node_stats
from .ui import dashboard_redirect, ui_file, ui_index
from .wake import wake_guest
from .webhooks import list_webhooks

__all__ = ["CONTEXT", "ROUTES", "Route"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Route(NamedTuple):
    method: str
    path: str
    handler: Handler
    open: bool = False  # answered without authentication
    # Streams follow until the client leaves: no HEAD for them (it would follow unseen).
    stream: bool = False


ROUTES = (
    Route("GET", "/health", health, open=True),
    Route("GET", "/metrics", metrics),
    Route("GET", "/api/v1/guests", list_guests),
    Route("GET", "/api/v1/guests/{ref:.+}", get_guest),
    # .../wake before .../{action}, which would match it too.
    Route("POST", "/api/v1/guests/{ref:.+}/wake", wake_guest, stream=True),
    Route("POST", "/api/v1/guests/{ref:.+}/{action}", guest_power),
    Route("GET", "/api/v1/lookup", lookup),
    Route("GET", "/api/v1/nodes", list_nodes),
    Route("GET", "/api/v1/routes", list_routes),
    Route("GET", "/api/v1/webhooks", list_webhooks),
    Route("GET", "/api/v1/openapi.json", openapi_document, open=True),
    Route("GET", "/api/v1/events", events, stream=True),
    Route("GET", "/api/v1/me", who_am_i),
    Route("GET", "/api/v1/audit", audit_trail),
    # The dashboard's files hold no data: open; every call the page makes needs the token.
    Route("GET", "/ui/", ui_index, open=True),
    Route("GET", "/ui/{file}", ui_file, open=True),
    Route("GET", "/ui", dashboard_redirect, open=True),
    Route("GET", "/dashboard", dashboard_redirect, open=True),
    Route("GET", "/", dashboard_redirect, open=True),
    Route("GET", "/api/v1/", api_index, open=True),
    Route("GET", "/api/v1", api_index, open=True),
    Route("POST", r"/exec/{node}/{vmid:\d+}", exec_in_guest, stream=True),
    Route("POST", "/exec/{node}", exec_on_node, stream=True),
    Route("GET", r"/journal/{node}/{vmid:\d+}", journal_in_guest, stream=True),
    Route("GET", r"/tail/{node}/{vmid:\d+}", tail_in_guest, stream=True),
    Route("GET", "/tail/{node}", tail_on_node, stream=True),
    # /stats/node/{node} before /stats/{ref:.+}, which would match it too.
    Route("GET", "/stats/node/{node}", node_stats, stream=True),
    Route("GET", "/stats/{ref:.+}", guest_stats, stream=True),
    Route("GET", "/journal/{node}", node_journal, stream=True),
    # Open at the edge: each checks the read scope itself, or integrations.public on loopback.
    Route("GET", "/integrations/traefik", traefik_config, open=True),
    Route("GET", "/integrations/prometheus-sd", prometheus_targets, open=True),
    Route("GET", "/integrations/ansible-inventory", ansible_inventory_json, open=True),
)
