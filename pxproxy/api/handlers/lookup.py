from __future__ import annotations

import json

from aiohttp import web

from ...routing.host_lookup import lookup_host
from ..problems import ambiguous, bad_request, not_found
from ._common import candidate, context, guest_json, json_text_response, require

_KINDS = ("ip", "host", "alias")
_MAX_QUERY = 253  # the longest DNS name


async def lookup(request: web.Request) -> web.Response:
    """Reverse lookup: exactly one of ?ip= ?host= ?alias=."""
    require(request, "read")
    query = request.query
    if len(query) != 1:
        raise bad_request("give exactly one of ?ip=, ?host= or ?alias=")
    kind, value = next(iter(query.items()))
    if kind not in _KINDS:
        raise bad_request(f"unknown parameter {kind!r}: give one of ?ip=, ?host= or ?alias=")
    if not value or len(value) > _MAX_QUERY:
        raise bad_request(f"{kind} must be 1..{_MAX_QUERY} characters")
    ctx = context(request)
    snap = ctx.inventory.snapshot
    route = None
    if kind == "ip":
        match = snap.lookup_ip(value)
    elif kind == "host":
        # A route's host first, exactly as the proxy decides; then the name rules.
        match, route = lookup_host(ctx.route_table, snap, value)
    else:
        match = snap.lookup_alias(value)
    count = match.total
    result = "found" if count == 1 else "ambiguous" if count else "missing"
    ctx.metrics.count_lookup(kind, result)
    via = f" (route {route.name!r} to guest {route.route.guest!r})" if route else ""
    if count == 0:
        raise not_found(f"no guest or node matches {kind} {value!r}{via}", query={kind: value})
    if count > 1:
        raise ambiguous(
            f"{count} guests or nodes match {kind} {value!r}{via}",
            [candidate(g) for g in match.guests]
            + [{"node": n.name, "cluster": n.cluster, "ip": n.ip} for n in match.nodes],
        )
    head = f'{{"match":"{kind}","query":{json.dumps(value)},'
    if route is not None:
        head += f'"route":{json.dumps(route.name)},'
    if match.guests:
        return json_text_response(f'{head}"guest":{guest_json(match.guests[0])}}}')
    return json_text_response(f'{head}"node":{json.dumps(match.nodes[0].to_json())}}}')
