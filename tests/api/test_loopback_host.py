"""Without a token, the API answers only requests addressed to loopback by name: a page on
another site whose name was rebound to 127.0.0.1 cannot read the inventory through a
visitor's browser (its requests carry its own Host)."""

from __future__ import annotations

from typing import Any

import pytest

from pxproxy.api.app import build_app, make_context
from pxproxy.api.principal import is_loopback_name
from pxproxy.config.models import Config
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

BASE = {"proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}]}
SECRET = "a-token-of-sixteen-chars"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:8081", True),
        ("wiki.localhost", True),
        ("127.0.0.1:8081", True),
        ("127.9.9.9", True),
        ("[::1]:8081", True),
        ("evil.example.com", False),
        ("evil.example.com:8081", False),
        ("10.0.0.5:8081", False),
        ("[fd00::1]:8081", False),
        ("", False),
    ],
)
def test_loopback_names(host: str, loopback: bool) -> None:
    assert is_loopback_name(host) is loopback


async def _client(aiohttp_client: Any, **extra: Any) -> Any:
    config = Config.model_validate({**BASE, **extra})
    return await aiohttp_client(build_app(make_context(config, Inventory(), Metrics(), True)))


async def test_anonymous_reads_need_a_loopback_host(aiohttp_client: Any) -> None:
    client = await _client(aiohttp_client)
    assert (await client.get("/api/v1/guests", headers={"Host": "localhost:8081"})).status == 200
    refused = await client.get("/api/v1/guests", headers={"Host": "evil.example.com"})
    assert refused.status == 403
    assert "addressed to localhost" in (await refused.json())["detail"]
    # /health stays open to everyone (load balancers probe it by any name).
    assert (await client.get("/health", headers={"Host": "evil.example.com"})).status == 200


async def test_public_integrations_need_a_loopback_host_and_tokens_do_not(
    aiohttp_client: Any,
) -> None:
    client = await _client(
        aiohttp_client,
        integrations={"public": True},
        api={"tokens": [{"name": "ops", "secret": SECRET}]},
    )
    path = "/integrations/prometheus-sd"
    assert (await client.get(path, headers={"Host": "127.0.0.1"})).status == 200
    assert (await client.get(path, headers={"Host": "evil.example.com"})).status == 403
    with_token = {"Host": "evil.example.com", "Authorization": f"Bearer {SECRET}"}
    assert (await client.get(path, headers=with_token)).status == 200
