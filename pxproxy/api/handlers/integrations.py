"""What other programs poll: Traefik's HTTP provider, Prometheus HTTP service discovery and
the Ansible inventory. Each answer is deterministic JSON with an ETag (304 on If-None-Match),
so a poller that sends it back gets nothing new until something changed.

Auth: the `read` scope, or, with `integrations.public: true`, no token at all on a loopback
API listener. The routes are registered open, and the check is made here per request, since
a reload may turn `public` on or off.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from aiohttp import web

from ...config.models import RouteConfig
from ...integrations.ansible import ansible_host, ansible_inventory
from ...integrations.filters import FilterError, parse_filters
from ...integrations.prometheus_sd import prometheus_sd
from ...integrations.traefik import dumps, render_traefik
from ...wake.contract import ALWAYS_READY, Gate
from ..auth import ANONYMOUS
from ..context import PRINCIPAL, ApiContext
from ..principal import principal_of, require_loopback_host
from ..problems import bad_request
from ._common import context, require

log = logging.getLogger(__name__)


def _authorise(request: web.Request) -> ApiContext:
    ctx = context(request)
    public = ctx.config.integrations.public and ctx.loopback_listener
    if public and "Authorization" not in request.headers:
        require_loopback_host(request)
        request[PRINCIPAL] = ANONYMOUS
        return ctx
    # The edge's own check (401 without a valid token), then the scope (403, audited).
    request[PRINCIPAL] = principal_of(request, ctx.authority, ctx.loopback_listener)
    require(request, "read")
    return ctx


def _etagged(request: web.Request, text: str) -> web.Response:
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    wanted = request.headers.get("If-None-Match", "")
    if etag in (tag.strip() for tag in wanted.split(",")):
        return web.Response(status=304, headers=headers)
    return web.Response(text=text, content_type="application/json", headers=headers)


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class _OmissionLog:
    """Logs the routes left out of Traefik's config when that list changes, not every poll."""

    def __init__(self) -> None:
        self._last: tuple[str, ...] = ()

    def report(self, omitted: tuple[str, ...]) -> None:
        if omitted == self._last:
            return
        self._last = omitted
        for reason in omitted:
            log.warning("traefik provider: route %s; left out", reason)


_OMISSIONS = _OmissionLog()


async def traefik_config(request: web.Request) -> web.Response:
    """Traefik's dynamic configuration (HTTP provider): one router per route, each pointed at
    its guest while ready, at pxproxy's proxy listener while parked."""
    ctx = _authorise(request)
    wake = ctx.wake

    def gate_for(route: RouteConfig) -> Gate:
        return wake.gate_for(route) if wake is not None else ALWAYS_READY

    render = render_traefik(
        ctx.routes.current,
        ctx.inventory.snapshot,
        gate_for,
        ctx.config.integrations.traefik,
        ctx.endpoints(),
    )
    _OMISSIONS.report(render.omitted)
    return _etagged(request, dumps(render.config))


async def prometheus_targets(request: web.Request) -> web.Response:
    """Prometheus HTTP service discovery; `?type=`, `?status=`, `?tag=` (each repeatable)."""
    ctx = _authorise(request)
    try:
        filters = parse_filters(request.query.items())
    except FilterError as exc:
        raise bad_request(exc.message, parameter=exc.parameter) from None
    groups = prometheus_sd(ctx.inventory.snapshot, ctx.routes.current, filters)
    return _etagged(request, _canonical(groups))


async def ansible_inventory_json(request: web.Request) -> web.Response:
    """Ansible's dynamic inventory: `--list` as is, `?host=H` for one host's variables."""
    ctx = _authorise(request)
    unknown = sorted(set(request.query) - {"host"})
    if unknown:
        raise bad_request(
            f"unknown query parameter {unknown[0][:64]!r}; use host", parameter=unknown[0][:64]
        )
    snapshot = ctx.inventory.snapshot
    if "host" in request.query:
        host = request.query["host"]
        if not host.strip():
            raise bad_request("host must name a host of the inventory", parameter="host")
        return _etagged(request, _canonical(ansible_host(snapshot, host)))
    return _etagged(request, _canonical(ansible_inventory(snapshot)))
