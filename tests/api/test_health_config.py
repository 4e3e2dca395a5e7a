"""/health tells what the config is doing: a failed reload and unbound listeners make it
degraded; keys waiting for a restart are listed without making it so."""

from __future__ import annotations

from typing import Any

from pxproxy.api.app import build_app, make_context
from pxproxy.config.models import Config
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.reload import ConfigStatus

CONFIG = Config.model_validate(
    {"proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}]}
)


async def _health(aiohttp_client: Any, status: ConfigStatus) -> dict[str, Any]:
    ctx = make_context(CONFIG, Inventory(), Metrics(), True, config_status=lambda: status)
    client = await aiohttp_client(build_app(ctx))
    resp = await client.get("/health")
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def test_a_failed_reload_and_an_unbound_listener_are_degraded(aiohttp_client: Any) -> None:
    body = await _health(
        aiohttp_client,
        ConfigStatus(
            reload_errors=("routes[0].port: must be at most 65535",),
            listen_errors=("listen.proxy: 0.0.0.0:80 is in use",),
        ),
    )
    assert body["status"] == "degraded"
    assert body["config"] == {
        "reload": "failed",
        "errors": ["routes[0].port: must be at most 65535"],
        "listen_errors": ["listen.proxy: 0.0.0.0:80 is in use"],
    }


async def test_keys_waiting_for_a_restart_are_listed(aiohttp_client: Any) -> None:
    body = await _health(aiohttp_client, ConfigStatus(restart_needed=("proxmox", "listen.api")))
    assert body["config"] == {"restart_needed": ["proxmox", "listen.api"]}
    # Nothing is wrong with what runs: the clusters alone decide the status (here: the one
    # cluster of this app has not been polled, so it is degraded for that reason only).
    assert [c["state"] for c in body["clusters"]] == ["pending"]


async def test_no_config_block_when_all_is_well(aiohttp_client: Any) -> None:
    body = await _health(aiohttp_client, ConfigStatus())
    assert "config" not in body
