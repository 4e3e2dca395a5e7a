"""/api/v1/routes names a stream route's protocol, and how a UDP route's guest is found ready."""

from __future__ import annotations

from typing import Any

from pxproxy.api.app import build_app, make_context
from pxproxy.config.models import Config, RouteConfig
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.routing.route_set import RouteStore
from pxproxy.wake.contract import ALWAYS_READY, Gate, WakeState


async def test_stream_routes_say_tcp_or_udp(aiohttp_client: Any) -> None:
    config = Config.model_validate(
        {
            "proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}],
            "routes": [
                {"listen": "0.0.0.0:7777", "guest": "sf", "port": 7777},
                {
                    "listen": "0.0.0.0:7777",
                    "protocol": "udp",
                    "guest": "sf",
                    "port": 7777,
                    "idle": {"timeout": "30m"},
                },
            ],
        }
    )

    class Wake:
        def states(self) -> list[tuple[int, WakeState]]:
            return []

        def gate_for(self, route: RouteConfig | int) -> Gate:
            return ALWAYS_READY

    routes = RouteStore()
    routes.publish(config.routes, ())
    app = build_app(make_context(config, Inventory(), Metrics(), True, wake=Wake(), routes=routes))
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/routes")
    body = await resp.json()
    assert resp.status == 200
    assert [(r["listen"], r["protocol"]) for r in body] == [
        ("0.0.0.0:7777", "tcp"),
        ("0.0.0.0:7777", "udp"),
    ]
    # No ready.http: a UDP route's guest is ready when a datagram to its port is not refused.
    assert body[1]["idle"]["ready"] == {"udp": True}
