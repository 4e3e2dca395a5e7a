"""`GET /journal/{node}`: the node journal over the Proxmox API, then follow.

`?limit=` 1..1000 (default 100) backlog lines, `?follow=0` stops after them, `?service=` (repeat)
filters by systemd unit. Text, one journal line per line. Errors before the first line are
problem answers; later ones are `error: ...` lines and polling backs off. The follow loop runs in
the handler itself (no background task) and ends when the client goes away or the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from ...error_table import problem_for
from ...pve.errors import PveError
from ...shutdown import STOPPING_MESSAGE
from ...streams.formatting import error_line
from ...streams.node_journal import (
    LIMIT_DEFAULT,
    LIMIT_MAX,
    MAX_SERVICES,
    JournalReader,
    ServiceNameError,
    validate_service,
)
from ..problems import ApiError, bad_request
from ._common import context, query_limit, require
from ._node_lookup import one_node
from .stats import client_gone, query_bool, reject_unknown

__all__ = ["node_journal"]

POLL_S = 1.0
BACKOFF_MAX_S = 10.0


def _limit(request: web.Request) -> int:
    return query_limit(request.query.get("limit"), default=LIMIT_DEFAULT, maximum=LIMIT_MAX)


def _services(request: web.Request) -> list[str]:
    services = request.query.getall("service", [])
    if len(services) > MAX_SERVICES:
        raise bad_request(f"at most {MAX_SERVICES} service parameters", parameter="service")
    try:
        return [validate_service(s) for s in services]
    except ServiceNameError as exc:
        raise bad_request(str(exc), parameter="service") from None


async def node_journal(request: web.Request) -> web.StreamResponse:
    require(request, "read", "journal")
    reject_unknown(request, ("limit", "follow", "service"))
    limit = _limit(request)
    follow = query_bool(request, "follow", True)
    services = _services(request)
    node = one_node(request, request.match_info["node"])
    client = context(request).clients.get(node.cluster)
    if client is None:
        raise ApiError(
            503, "Service Unavailable", f"no Proxmox connection for cluster {node.cluster!r}"
        )
    reader = JournalReader(client, node.name, services)
    try:
        backlog = await reader.backlog(limit)
    except PveError as exc:
        raise problem_for(exc, cluster=node.cluster, node=node.name) from None

    response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.content_type = "text/plain"
    response.charset = "utf-8"
    await response.prepare(request)
    stopping = context(request).stopping
    with contextlib.suppress(ConnectionError):
        if backlog:
            await response.write("".join(line + "\n" for line in backlog).encode())
        delay = POLL_S
        while follow:
            # Waiting on the stop event (not a bare sleep) ends followers at shutdown at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            if client_gone(request):
                break
            if stopping.is_set():
                await response.write((error_line(STOPPING_MESSAGE) + "\n").encode())
                break
            try:
                lines = await reader.poll()
            except PveError as exc:
                await response.write((error_line(str(exc)) + "\n").encode())
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = POLL_S
            if lines:
                await response.write("".join(line + "\n" for line in lines).encode())
        await response.write_eof()
    return response
