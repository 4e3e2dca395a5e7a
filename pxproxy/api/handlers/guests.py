from __future__ import annotations

from aiohttp import web

from ..problems import bad_request
from ._common import context, guest_json, json_text_response, require
from ._guest_lookup import guest_by_ref

_FILTERS = ("cluster", "node", "type", "status", "name")


async def list_guests(request: web.Request) -> web.Response:
    """All guests, optionally filtered by exact cluster/node/type/status/name or a tag."""
    require(request, "read")
    unknown = sorted(set(request.query) - {*_FILTERS, "tag"})
    if unknown:
        raise bad_request(f"unknown query parameter {unknown[0]!r}; use {', '.join(_FILTERS)}, tag")
    guests = context(request).inventory.snapshot.guests
    for key in _FILTERS:
        if key in request.query:
            want = request.query[key]
            guests = tuple(g for g in guests if str(getattr(g, key)) == want)
    if "tag" in request.query:
        tag = request.query["tag"]
        guests = tuple(g for g in guests if tag in g.tags)
    return json_text_response("[" + ",".join(guest_json(g) for g in guests) + "]")


async def get_guest(request: web.Request) -> web.Response:
    require(request, "read")
    ref = request.match_info["ref"]
    guest = guest_by_ref(context(request).inventory.snapshot, ref)
    return json_text_response(guest_json(guest))
