from __future__ import annotations

from aiohttp import web

from ._common import context, json_response, require


async def list_webhooks(request: web.Request) -> web.Response:
    """Each configured webhook: its format and host (never the URL's path, query or secret),
    its delivery counts, last error and success, queue length and recent failures."""
    require(request, "read")
    return json_response(context(request).webhooks())
