"""The management API application: routes, auth and metrics middleware, errors at the edge."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiohttp import web

from ..config.models import Config, RouteConfig
from ..events.hub import EventHub
from ..inventory.store import Inventory
from ..listeners.server_header import on_response_prepare
from ..metrics import Metrics
from ..pve.client import PveClient
from ..reload import ConfigStatus
from ..routing.endpoints import ProxyEndpoints
from ..routing.route_set import RouteStore
from ..shutdown import Stopping
from ..streams.shell_runner import ShellRunner
from ..streams.stats import StatsHub
from . import handlers
from .audit import AuditLog
from .auth import TokenAuthority
from .context import PRINCIPAL, ApiContext, ContextCell, PowerActions, RouteWake
from .handlers import Handler
from .principal import principal_of
from .problems import ApiError, problem_response

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"
# The metrics status of a request whose handler was cancelled before it answered.
CLIENT_CLOSED_REQUEST = 499


def build_app(
    ctx: ApiContext, setup: Iterable[Callable[[web.Application], None]] = ()
) -> web.Application:
    """Each route is wrapped once at startup with auth, error mapping and metrics: cheaper per
    request than an aiohttp middleware, which is rebuilt around the handler on every call."""
    app = web.Application(client_max_size=64 * 1024)
    cell = ContextCell(ctx)
    app[handlers.CONTEXT] = cell
    app.on_response_prepare.append(on_response_prepare)  # `Server: pxproxy`, no version

    async def begin_stopping(_: web.Application) -> None:
        # First of the shutdown steps: open streams end themselves before aiohttp waits.
        cell.ctx.stopping.set()

    app.on_shutdown.append(begin_stopping)
    for step in setup:  # services of the streaming endpoints, under their own AppKeys
        step(app)
    for route in handlers.ROUTES:
        # The metrics label is the canonical path: "/api/v1/guests/{ref}".
        endpoint = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.path)
        edge = _edge(cell, endpoint, route.handler, route.open)
        app.router.add_route(route.method, route.path, edge)
        if route.method == "GET" and not route.stream:
            # Load balancers probe with HEAD: same answer, no body.
            app.router.add_route("HEAD", route.path, edge)
    # Last: anything no route took gets a problem document (404, or 405 with Allow). [\s\S],
    # not `.`: a path with an encoded newline (%0A) must not fall through to aiohttp's text.
    app.router.add_route("*", r"/{tail:[\s\S]*}", _edge(cell, UNMATCHED, _unmatched, True))
    return app


def _edge(cell: ContextCell, endpoint: str, handler: Handler, open_: bool) -> Handler:
    metrics = cell.ctx.metrics

    async def edge(request: web.Request) -> web.StreamResponse:
        try:
            if not open_:
                # Read per request: a reload may have swapped the tokens.
                ctx = cell.ctx
                request[PRINCIPAL] = principal_of(request, ctx.authority, ctx.loopback_listener)
            response = await handler(request)
        except asyncio.CancelledError:
            # The client left (or the daemon stopped) mid-request: counted as nginx's 499.
            metrics.count_api(endpoint, CLIENT_CLOSED_REQUEST)
            raise
        except ApiError as exc:
            headers = dict(exc.headers)
            if exc.status == 401:
                headers["WWW-Authenticate"] = "Bearer"
            response = problem_response(exc, headers or None)
        except web.HTTPException as exc:
            response = problem_response(ApiError(exc.status, exc.reason, exc.text or exc.reason))
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = problem_response(
                ApiError(500, "Internal Server Error", "see the daemon log")
            )
        metrics.count_api(endpoint, response.status)
        return response

    return edge


async def _unmatched(request: web.Request) -> web.StreamResponse:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.canonical == "/{tail}":
            continue
        _, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        allow = ", ".join(sorted(allowed))
        raise ApiError(
            405,
            "Method Not Allowed",
            f"{request.method} is not allowed here; use {allow}",
            headers={"Allow": allow},
        )
    raise ApiError(404, "Not Found", f"no endpoint {request.path}")


def make_context(
    config: Config,
    inventory: Inventory,
    metrics: Metrics,
    loopback: bool,
    wake: RouteWake | None = None,
    clients: Mapping[str, PveClient] | None = None,
    stopping: Stopping | None = None,
    power: PowerActions | None = None,
    audit: AuditLog | None = None,
    shells: ShellRunner | None = None,
    stats: StatsHub | None = None,
    routes: RouteStore | None = None,
    endpoints: Callable[[], ProxyEndpoints] | None = None,
    config_status: Callable[[], ConfigStatus] | None = None,
    activity_of: Callable[[RouteConfig], dict[str, Any]] | None = None,
    proxy_workers: Callable[[], list[dict[str, Any]]] | None = None,
    events: EventHub | None = None,
    webhooks: Callable[[], list[dict[str, Any]]] | None = None,
) -> ApiContext:
    return ApiContext(
        config=config,
        inventory=inventory,
        metrics=metrics,
        authority=TokenAuthority(config.api.tokens),
        loopback_listener=loopback,
        cluster_names=config.cluster_names(),
        wake=wake,
        power=power,
        clients=dict(clients or {}),
        stopping=stopping or Stopping(),
        audit=audit or AuditLog(),
        shells=shells,
        stats=stats,
        routes=routes or RouteStore(),
        endpoints=endpoints or ProxyEndpoints,
        config_status=config_status or ConfigStatus,
        proxy_workers=proxy_workers,
        events=events or EventHub(),
        webhooks=webhooks or list,
        **({"activity_of": activity_of} if activity_of is not None else {}),
    )
