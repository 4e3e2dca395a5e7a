"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document of this API (open, built once)."""

from __future__ import annotations

from aiohttp import web

from ..openapi import document_json
from ._common import json_text_response


async def openapi_document(request: web.Request) -> web.Response:
    # Imported here: ROUTES lists this very handler.
    from . import ROUTES

    return json_text_response(document_json(ROUTES))
