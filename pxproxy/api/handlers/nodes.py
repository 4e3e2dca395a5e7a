from __future__ import annotations

from aiohttp import web

from ._common import context, json_response, require


async def list_nodes(request: web.Request) -> web.Response:
    require(request, "read")
    return json_response([n.to_json() for n in context(request).inventory.snapshot.nodes])
