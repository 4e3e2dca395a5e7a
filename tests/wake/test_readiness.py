"""Readiness probes against real local sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from pxproxy.config.models import IdleConfig
from pxproxy.wake.readiness import HttpProbe, TcpProbe, probe_for

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=int(request.query.get("status", "200")))

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def test_tcp_probe_accepts_an_open_port_and_refuses_a_closed_one() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
    port = server.sockets[0].getsockname()[1]
    probe = TcpProbe(attempt_timeout_s=1)
    try:
        assert await probe.check(HOST, port)
    finally:
        server.close()
        await server.wait_closed()
    assert not await probe.check(HOST, free_port())


@pytest.mark.parametrize(
    ("status", "ready"), [(200, True), (404, True), (500, False), (503, False)]
)
async def test_http_probe_counts_statuses_below_500(
    http_port: int, status: int, ready: bool
) -> None:
    probe = HttpProbe(f"/healthz?status={status}")
    try:
        assert await probe.check(HOST, http_port) is ready
    finally:
        await probe.close()


async def test_http_probe_connection_errors_are_not_ready() -> None:
    probe = HttpProbe("healthz")
    try:
        assert not await probe.check(HOST, free_port())
    finally:
        await probe.close()


def test_probe_for_picks_http_when_asked() -> None:
    assert isinstance(probe_for(IdleConfig()), TcpProbe)
    assert isinstance(probe_for(IdleConfig.model_validate({"ready": {"http": "/h"}})), HttpProbe)
