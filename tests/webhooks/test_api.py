"""GET /api/v1/webhooks and the pxproxy_webhook_* metrics: failures shown, secrets never."""

from __future__ import annotations

from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.models import WebhookList
from pxproxy.config.loader import parse_config
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.webhooks.collector import WebhooksCollector

from ..support import wait_for
from .receiver import receiver
from .support import hook, wake, webhooks

READ = "read-secret-0123456789"
POWER = "power-secret-0123456789"
CONFIG = f"""
proxmox: [{{name: lab, url: "https://pve:8006", token_id: a@pve!t, secret: s}}]
api:
  tokens:
    - {{name: reader, secret: {READ}, scopes: [read]}}
    - {{name: powerful, secret: {POWER}, scopes: [power]}}
"""


async def test_failures_are_listed_without_the_url_path_query_or_secret(
    aiohttp_client: AiohttpClient,
) -> None:
    async with receiver() as recv:
        url = recv.url("/status/410/PATHTOKEN?key=QUERYTOKEN")
        config = hook("ops", url, secret="HMACSECRET", retries=0)
        async with webhooks([config]) as (service, hub):
            metrics = Metrics()
            metrics.registry.register(WebhooksCollector(lambda: service.senders))
            ctx = make_context(
                parse_config(CONFIG, env={}),
                Inventory(),
                metrics,
                True,
                webhooks=service.describe,
            )
            client = await aiohttp_client(build_app(ctx))
            hub.publish(wake("lab:7361", "waking"))
            await wait_for(lambda: service.describe()[0]["failed"] == 1, 10, "the failure")
            reader = {"Authorization": f"Bearer {READ}"}
            resp = await client.get("/api/v1/webhooks", headers=reader)
            text = await resp.text()
            listed = await resp.json()
            refused = await client.get(
                "/api/v1/webhooks", headers={"Authorization": f"Bearer {POWER}"}
            )
            scraped = await (await client.get("/metrics", headers=reader)).text()
    assert resp.status == 200
    assert refused.status == 403  # the read scope
    # The endpoint echoed its path and query in its refusal; neither reaches the listing.
    for secret in ("PATHTOKEN", "QUERYTOKEN", "HMACSECRET", "/status"):
        assert secret not in text
    WebhookList.model_validate(listed)  # what the OpenAPI document says it holds
    (status,) = listed
    assert status["name"] == "ops"
    assert status["format"] == "json"
    assert status["host"] == f"127.0.0.1:{recv.port}"
    assert (status["delivered"], status["failed"], status["queued"]) == (0, 1, 0)
    assert status["last_error"].startswith("HTTP 410: no hook at ")
    assert status["last_success_at"] is None
    (failure,) = status["recent_failures"]
    assert failure["event"] == "wake"
    assert failure["guest"] == "lab:7361"
    assert failure["status"] == 410
    assert 'pxproxy_webhook_deliveries_total{result="failed",webhook="ops"} 1.0' in scraped
    assert 'pxproxy_webhook_attempts_total{webhook="ops"} 1.0' in scraped


async def test_no_webhooks_is_an_empty_list(aiohttp_client: AiohttpClient) -> None:
    ctx = make_context(parse_config(CONFIG, env={}), Inventory(), Metrics(), True)
    client = await aiohttp_client(build_app(ctx))
    resp = await client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {READ}"})
    assert (resp.status, await resp.json()) == (200, [])
