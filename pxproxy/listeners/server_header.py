"""The `Server` header of every response pxproxy makes: its name, never a version."""

from __future__ import annotations

from aiohttp import web

SERVER_NAME = "pxproxy"


async def on_response_prepare(_: web.Request, response: web.StreamResponse) -> None:
    """For web.Application.on_response_prepare: every response the API prepares."""
    response.headers["Server"] = SERVER_NAME
