"""Hostile path segments and query values never make an API endpoint answer 5xx."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers.guest_streams import setup_guest_streams
from pxproxy.api.handlers.stats import setup_stats
from pxproxy.config.models import Config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

from ..builders import make_guest, make_node

TOKEN = "hostile-paths-token-0123"
HOSTILE = [
    "1" * 5000,
    "١٠١",
    "%00",
    "%0a",
    "..%2f..%2fetc%2fpasswd",
    "a" * 300,
    "%C2%B2",
    "-1",
    "0",
    "%F0%9F%92%A9",
    "nowhere:101",
    "999999999999",
]
PATHS = [
    "/api/v1/guests/{x}",
    "/api/v1/lookup?ip={x}",
    "/api/v1/lookup?host={x}",
    "/stats/{x}?stream=0",
    "/stats/node/{x}?stream=0",
    "/journal/{x}?follow=0",
    "/journal/pve1/{x}?follow=0",
    "/tail/pve1/{x}?file=/var/log/syslog&follow=0",
    "/tail/{x}?file=/var/log/syslog&follow=0",
]


@pytest.fixture
async def api(aiohttp_client: Any) -> Any:
    config = Config.model_validate(
        {
            "proxmox": [
                {"name": "lab", "url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}
            ],
            "api": {
                "tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "exec", "power"]}]
            },
        }
    )
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build(
            "lab",
            [make_guest(101, "wiki", cluster="lab", node="pve1")],
            [make_node("pve1", cluster="lab")],
        )
    )
    app = build_app(
        make_context(config, inventory, Metrics(), True),
        setup=[setup_stats, setup_guest_streams],
    )
    return await aiohttp_client(app)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", HOSTILE)
async def test_no_5xx_for_hostile_segments(api: Any, path: str, value: str) -> None:
    resp = await api.get(path.format(x=value), headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status < 500, (path, value, resp.status, await resp.text())


@pytest.mark.parametrize("value", HOSTILE)
async def test_no_5xx_for_hostile_exec_and_power(api: Any, value: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in (
        ("POST", f"/exec/pve1/{value}"),
        ("POST", f"/api/v1/guests/{value}/start"),
        ("POST", f"/api/v1/guests/wiki/{value}"),
    ):
        resp = await api.request(method, path, json={"argv": ["true"]}, headers=auth)
        assert resp.status < 500, (method, path, resp.status, await resp.text())
    assert quote(value)  # the corpus itself is printable in a URL
