"""The /metrics reader: the body, or MetricsUnavailable saying why."""

from __future__ import annotations

import pytest
from aiohttp import web

from pxproxy.wake.activity import HttpMetricsFetch, MetricsUnavailable

from .test_traefik_real import free_port


async def serve(status: int, body: str) -> tuple[web.AppRunner, str]:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"


async def test_the_body_is_returned() -> None:
    runner, url = await serve(200, "traefik_config_reloads_total 1\n")
    fetch = HttpMetricsFetch()
    try:
        assert await fetch(url) == "traefik_config_reloads_total 1\n"
    finally:
        await fetch.close()
        await runner.cleanup()


async def test_an_error_status_is_unavailable() -> None:
    runner, url = await serve(404, "404 page not found")
    fetch = HttpMetricsFetch()
    try:
        with pytest.raises(MetricsUnavailable, match="answered HTTP 404"):
            await fetch(url)
    finally:
        await fetch.close()
        await runner.cleanup()


async def test_a_refused_connection_is_unavailable() -> None:
    fetch = HttpMetricsFetch()
    try:
        with pytest.raises(MetricsUnavailable, match="Cannot connect"):
            await fetch(f"http://127.0.0.1:{free_port()}/metrics")
    finally:
        await fetch.close()
