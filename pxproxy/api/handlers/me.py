"""`GET /api/v1/me`: who the token is and what it may do, so a client (the dashboard) shows
only the actions it may take. Any valid token may ask; the API still refuses on its own."""

from __future__ import annotations

from aiohttp import web

from ..context import PRINCIPAL
from ._common import json_response


async def who_am_i(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    return json_response(
        {
            "name": principal.name,
            "scopes": sorted(principal.scopes),
            # The allowlist as configured: the guests power, exec and the audit trail admit.
            "guests": list(principal.guests),
        }
    )
