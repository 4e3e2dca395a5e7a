from __future__ import annotations

from aiohttp import web

from ..problems import ambiguous, bad_request, not_found
from ._common import candidate, context, json_response, require

_KINDS = ("ip", "host", "alias")
_MAX_QUERY = 253  # the longest DNS name


async def lookup(request: web.Request) -> web.Response:
    """Reverse lookup: exactly one of ?ip= ?host= ?alias=."""
    require(request, "read")
    given = [k for k in _KINDS if k in request.query]
    extra = sorted(set(request.query) - set(_KINDS))
    if len(given) != 1 or extra:
        raise bad_request("give exactly one of ?ip=, ?host= or ?alias=")
    kind = given[0]
    value = request.query[kind]
    if not value or len(value) > _MAX_QUERY:
        raise bad_request(f"{kind} must be 1..{_MAX_QUERY} characters")
    ctx = context(request)
    snap = ctx.inventory.snapshot
    if kind == "ip":
        match = snap.lookup_ip(value)
    elif kind == "host":
        match = snap.lookup_host(value)
    else:
        match = snap.lookup_alias(value)
    count = match.total
    result = "found" if count == 1 else "ambiguous" if count else "missing"
    ctx.metrics.lookups.labels(kind, result).inc()
    if count == 0:
        raise not_found(f"no guest or node matches {kind} {value!r}", query={kind: value})
    if count > 1:
        raise ambiguous(
            f"{count} guests or nodes match {kind} {value!r}",
            [candidate(g) for g in match.guests]
            + [{"node": n.name, "cluster": n.cluster, "ip": n.ip} for n in match.nodes],
        )
    if match.guests:
        return json_response({"match": kind, "query": value, "guest": match.guests[0].to_json()})
    return json_response({"match": kind, "query": value, "node": match.nodes[0].to_json()})
