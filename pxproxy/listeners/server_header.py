"""The `Server` header of every response pxproxy makes: its name, never a version."""

from __future__ import annotations

from aiohttp import web

SERVER_NAME = "pxproxy"


def brand(response: web.StreamResponse) -> None:
    """Name pxproxy as the server unless the response already names one (a guest's own
    `Server` header passes through the proxy). aiohttp would add its version otherwise."""
    response.headers.setdefault("Server", SERVER_NAME)


async def on_response_prepare(_: web.Request, response: web.StreamResponse) -> None:
    """For web.Application.on_response_prepare: every response the API prepares."""
    response.headers["Server"] = SERVER_NAME
