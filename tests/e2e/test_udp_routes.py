"""UDP routes through the real daemon: a datagram wakes a stopped lab guest, what waited is
relayed in order, the API and /metrics show it; a guest's notes open and close a UDP listener
when `notes.udp` allows it; and `pxproxy run` (uvloop) does the same as a subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.listeners.bind_errors import ListenError

from ..proxy.udp_support import clients
from ..support import free_udp_port, lab_cluster, set_notes, wait_for
from .daemon_process import running_daemon

# vmids 7131-7139: used by no other test.
FACTORIO, VALHEIM = 7131, 7132
GAME_PORT, VALHEIM_PORT = 34197, 2456
DEADLINE_S = 20.0
IDLE = {"timeout": "1h", "wake_timeout": "15s"}


def add_games(lab: LabServer) -> None:
    lab.cluster.add_guest(
        FACTORIO,
        "lxc",
        "factorio",
        "pve1",
        ports=(),
        udp_ports=(GAME_PORT,),
        boot_time_s=0.3,
        static_ip=True,
    )
    lab.cluster.add_guest(
        VALHEIM,
        "lxc",
        "valheim",
        "pve1",
        status="running",
        ports=(),
        udp_ports=(VALHEIM_PORT,),
        static_ip=True,
        tags="pxproxy",
    )


def starts(lab: LabServer, vmid: int) -> list[str]:
    return [t.type for t in lab.tasks if t.id == str(vmid) and t.type.endswith("start")]


@pytest.fixture
async def daemon(lab_server: LabServer) -> AsyncIterator[Daemon]:
    add_games(lab_server)
    await lab_server.cluster.open()
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server, poll_interval="0.2s", notes_refresh="0.5s")],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "notes": {"udp": True},
            "routes": [
                {
                    "listen": "127.0.0.1:0",
                    "protocol": "udp",
                    "guest": "factorio",
                    "port": GAME_PORT,
                    "idle": IDLE,
                }
            ],
        }
    )
    running = Daemon(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def api(daemon: Daemon, path: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.api_port}{path}") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def test_a_datagram_wakes_the_guest_and_the_api_and_metrics_show_the_route(
    lab_server: LabServer, daemon: Daemon
) -> None:
    address = daemon.udp_proxy.bound_addresses()["127.0.0.1:0"]
    assert daemon.endpoints().udp["127.0.0.1:0"] == address
    async with clients(address, 2) as players:
        for n in range(3):
            for i, player in enumerate(players):
                player.send(f"{i}:{n}".encode())
        for i, player in enumerate(players):
            assert await player.receive(3) == [f"{i}:{n}".encode() for n in range(3)]
    assert starts(lab_server, FACTORIO) == ["vzstart"]

    routes = json.loads(await api(daemon, "/api/v1/routes"))
    (route,) = [r for r in routes if r.get("guest") == "factorio"]
    assert (route["listen"], route["protocol"], route["state"]) == ("127.0.0.1:0", "udp", "ready")
    metrics = await api(daemon, "/metrics")
    label = 'route="udp:127.0.0.1:0"'
    assert f'pxproxy_udp_datagrams_total{{direction="to_guest",{label}}} 6.0' in metrics
    assert f'pxproxy_udp_datagrams_total{{direction="to_client",{label}}} 6.0' in metrics
    assert f"pxproxy_udp_sessions_opened_total{{{label}}} 2.0" in metrics


async def test_notes_open_a_udp_listener_and_close_it_again(
    lab_server: LabServer, daemon: Daemon
) -> None:
    listen = f"127.0.0.1:{free_udp_port()}"
    notes = (
        f"```yaml\npxproxy:\n  listen: '{listen}'\n  protocol: udp\n  port: {VALHEIM_PORT}\n```\n"
    )
    await set_notes(lab_server, VALHEIM, description=notes)
    await wait_for(
        lambda: listen in daemon.udp_proxy.bound_addresses(), DEADLINE_S, "the declared listener"
    )
    async with clients(daemon.udp_proxy.bound_addresses()[listen]) as (player,):
        player.send(b"skal")
        assert await player.receive() == [b"skal"]
    assert listen in daemon.endpoints().udp

    await set_notes(lab_server, VALHEIM, tags="")
    await wait_for(
        lambda: listen not in daemon.udp_proxy.bound_addresses(),
        DEADLINE_S,
        "the listener to close",
    )
    assert list(daemon.udp_proxy.bound_addresses()) == ["127.0.0.1:0"]


async def test_a_declared_udp_route_that_cannot_bind_is_in_health(
    lab_server: LabServer, daemon: Daemon
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        notes = (
            f"```yaml\npxproxy:\n  listen: '{busy}'\n  protocol: udp\n  port: {VALHEIM_PORT}\n```\n"
        )
        await set_notes(lab_server, VALHEIM, description=notes)

        async def reported() -> bool:
            health = json.loads(await api_any(daemon, "/health"))
            errors = health.get("config", {}).get("listen_errors", [])
            return any(busy in e and "address already in use" in e for e in errors)

        await wait_for(reported, DEADLINE_S, "the bind error in /health")
        assert busy not in daemon.udp_proxy.bound_addresses()


async def test_a_udp_route_that_cannot_bind_at_start_names_its_key(
    lab_server: LabServer,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        config = Config.model_validate(
            {
                "proxmox": [lab_cluster(lab_server)],
                "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
                "routes": [{"listen": busy, "protocol": "udp", "guest": "x", "port": 1}],
            }
        )
        running = Daemon(config)
        try:
            with pytest.raises(ListenError) as info:
                await running.start()
        finally:
            await running.stop()
    assert str(info.value).startswith(f"routes[0].listen {busy}: address already in use")
    assert running.udp_proxy.bound_addresses() == {}


async def api_any(daemon: Daemon, path: str) -> str:
    """The body whatever the status (/health answers 503 while degraded)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.api_port}{path}") as resp,
    ):
        return await resp.text()


async def test_pxproxy_run_wakes_a_guest_on_a_datagram(
    lab_server: LabServer, tmp_path: Path
) -> None:
    add_games(lab_server)
    port = free_udp_port()
    config: dict[str, Any] = {
        "proxmox": [lab_cluster(lab_server)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "routes": [
            {
                "listen": f"127.0.0.1:{port}",
                "protocol": "udp",
                "guest": "factorio",
                "port": GAME_PORT,
                "idle": IDLE,
                "udp": {"session_timeout": "30s"},
            }
        ],
    }
    path = tmp_path / "pxproxy.yml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    async with running_daemon(path) as process:
        await process.wait_listening("api")
        # The API opens first; the route's socket once polling and idle-watch have started.
        await wait_for(lambda: "listening: api" in process.text, DEADLINE_S, "the listeners")
        async with clients(("127.0.0.1", port)) as (player,):
            for n in range(4):
                player.send(f"tick {n}".encode())
            assert await player.receive(4) == [f"tick {n}".encode() for n in range(4)]
        assert starts(lab_server, FACTORIO) == ["vzstart"]
        process.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_S):
            await process.finish()
    assert process.proc.returncode == 0
    assert f"udp:127.0.0.1:{port} on 127.0.0.1:{port}" in process.text
