"""`GET /api/v1/`: where to start (open): the OpenAPI document, the dashboard, /health.
And `GET /`: a browser that opens the API's address lands on the dashboard."""

from __future__ import annotations

from aiohttp import web

from ._common import json_response

INDEX = {
    "openapi": "/api/v1/openapi.json",
    "dashboard": "/ui/",
    "health": "/health",
    "events": "/api/v1/events",
}


async def api_index(request: web.Request) -> web.Response:
    return json_response(INDEX)
