"""The management API application: routes, auth and metrics middleware, errors at the edge."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..config.models import Config
from ..inventory.store import Inventory
from ..metrics import Metrics
from . import handlers
from .auth import ANONYMOUS, Principal, TokenAuthority
from .context import PRINCIPAL, ApiContext
from .problems import ApiError, problem_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health"})


def build_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[_edge_middleware(ctx)], client_max_size=64 * 1024)
    app[handlers.CONTEXT] = ctx
    handlers.add_routes(app.router)
    return app


def _edge_middleware(ctx: ApiContext) -> Middleware:
    metrics = ctx.metrics
    authority = ctx.authority
    loopback = ctx.loopback_listener

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unmatched"
        try:
            if request.path not in OPEN_PATHS and route is not None:
                request[PRINCIPAL] = _principal(request, authority, loopback)
            response = await handler(request)
        except ApiError as exc:
            response = problem_response(
                exc, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            )
        except web.HTTPException as exc:
            allow = exc.headers.get("Allow")  # a 405 must say which methods are allowed
            response = problem_response(
                ApiError(exc.status, exc.reason, exc.text or exc.reason),
                {"Allow": allow} if allow else None,
            )
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            response = problem_response(
                ApiError(500, "Internal Server Error", "see the daemon log")
            )
        metrics.count_api(endpoint, response.status)
        return response

    return middleware


def _principal(request: web.Request, authority: TokenAuthority, loopback: bool) -> Principal:
    header = request.headers.get("Authorization")
    if authority.configured:
        principal = authority.authenticate(header)
        if principal is None:
            raise ApiError(
                401,
                "Unauthorized",
                "send Authorization: Bearer <secret> of a token from api.tokens"
                if not header
                else "the bearer token is not one of api.tokens",
            )
        return principal
    if not loopback:
        raise ApiError(
            401,
            "Unauthorized",
            "no api.tokens are configured, so this non-loopback listener serves only /health",
        )
    return ANONYMOUS


def make_context(
    config: Config, inventory: Inventory, metrics: Metrics, loopback: bool
) -> ApiContext:
    return ApiContext(
        config=config,
        inventory=inventory,
        metrics=metrics,
        authority=TokenAuthority(config.api.tokens),
        loopback_listener=loopback,
        cluster_names=config.cluster_names(),
    )
