"""GET /integrations/{traefik,prometheus-sd,ansible-inventory}: who may read them, what they
answer, and the ETag a poller sends back."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.audit import AuditLog
from pxproxy.config.loader import parse_config
from pxproxy.config.models import RouteConfig
from pxproxy.integrations.names import traefik_service_name
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.routing.endpoints import ProxyEndpoints
from pxproxy.wake.contract import Gate, WakeState

from ..builders import make_guest, make_node
from ..integrations.support import StateGate

READ = "read-secret-0123456789"
POWER = "power-secret-0123456789"
ENDPOINTS = (
    "/integrations/traefik",
    "/integrations/prometheus-sd",
    "/integrations/ansible-inventory",
)

WIKI = make_guest(101, "wiki", ips=("10.0.0.5",), tags=("web",))
SLEEPY = make_guest(102, "sleepy", status="stopped", ips=("10.0.0.6",), kind="qemu")

Client = TestClient[Any, Any]
Make = Callable[..., Awaitable[tuple[Client, AuditLog]]]


class Wake:
    """Idle-watch as the API sees it: `sleepy`'s route is asleep, the rest ready."""

    def states(self) -> list[tuple[int, WakeState]]:
        return []

    def gate_for(self, route: RouteConfig | int) -> Gate:
        assert isinstance(route, RouteConfig)
        return StateGate(WakeState.ASLEEP if route.guest == "sleepy" else WakeState.READY)


def config_text(tokens: bool, public: bool) -> str:
    text = textwrap.dedent(
        """
        proxmox:
          - {name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}
        routes:
          - {host: wiki.example.com, guest: wiki, port: 8080}
          - {host: sleepy.example.com, guest: sleepy, port: 80, idle: {timeout: 1m}}
        """
    )
    if tokens:
        text += textwrap.dedent(
            f"""
            api:
              tokens:
                - {{name: reader, secret: {READ}, scopes: [read]}}
                - {{name: powerful, secret: {POWER}, scopes: [power]}}
            """
        )
    if public:
        text += "integrations: {public: true}\n"
    return text


@pytest.fixture
def make_api(aiohttp_client: AiohttpClient) -> Make:
    async def make(
        *, tokens: bool = True, public: bool = False, loopback: bool = True
    ) -> tuple[Client, AuditLog]:
        cfg = parse_config(config_text(tokens, public), env={})
        inventory = Inventory()
        inventory.publish(ClusterSnapshot.build("home", [WIKI, SLEEPY], [make_node("pve")]))
        audit = AuditLog()
        ctx = make_context(
            cfg,
            inventory,
            Metrics(),
            loopback,
            wake=Wake(),
            audit=audit,
            endpoints=lambda: ProxyEndpoints(("127.0.0.1", 8080)),
        )
        return await aiohttp_client(build_app(ctx)), audit

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_no_token_is_401_and_a_token_without_read_is_403_audited(
    make_api: Make, path: str
) -> None:
    client, audit = await make_api()
    resp = await client.get(path)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.get(path, headers=bearer("not-a-token"))
    assert resp.status == 401
    resp = await client.get(path, headers=bearer(POWER))
    assert resp.status == 403
    assert "'read' scope" in (await resp.json(content_type=None))["detail"]
    [record] = audit.records
    assert record.token == "powerful"
    assert record.result.startswith("denied: ")
    assert record.detail["path"] == path
    resp = await client.get(path, headers=bearer(READ))
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert len(audit.records) == 1


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_public_answers_without_a_token_on_a_loopback_listener_only(
    make_api: Make, path: str
) -> None:
    client, _ = await make_api(public=True, loopback=True)
    assert (await client.get(path)).status == 200
    # Other endpoints still want their token.
    assert (await client.get("/api/v1/guests")).status == 401
    remote, _ = await make_api(public=True, loopback=False)
    assert (await remote.get(path)).status == 401
    assert (await remote.get(path, headers=bearer(READ))).status == 200


async def test_without_tokens_a_loopback_listener_serves_them_and_another_does_not(
    make_api: Make,
) -> None:
    client, _ = await make_api(tokens=False)
    assert (await client.get(ENDPOINTS[0])).status == 200
    remote, _ = await make_api(tokens=False, loopback=False)
    assert (await remote.get(ENDPOINTS[0])).status == 401


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_an_etag_sent_back_gets_304_and_no_body(make_api: Make, path: str) -> None:
    client, _ = await make_api()
    first = await client.get(path, headers=bearer(READ))
    etag = first.headers["ETag"]
    body = await first.read()
    again = await client.get(path, headers=bearer(READ))
    assert again.headers["ETag"] == etag
    assert await again.read() == body  # byte-identical
    unchanged = await client.get(path, headers={**bearer(READ), "If-None-Match": f'"x", {etag}'})
    assert unchanged.status == 304
    assert await unchanged.read() == b""
    stale = await client.get(path, headers={**bearer(READ), "If-None-Match": '"other"'})
    assert stale.status == 200


async def test_traefik_points_ready_routes_at_guests_and_parked_ones_at_pxproxy(
    make_api: Make,
) -> None:
    client, _ = await make_api()
    config = await (await client.get(ENDPOINTS[0], headers=bearer(READ))).json()
    services = config["http"]["services"]
    wiki = RouteConfig(host=("wiki.example.com",), guest="wiki", port=8080)
    sleepy = RouteConfig(
        host=("sleepy.example.com",), guest="sleepy", port=80, idle={"timeout": 60.0}
    )
    assert services[traefik_service_name(wiki)]["loadBalancer"]["servers"] == [
        {"url": "http://10.0.0.5:8080"}
    ]
    assert services[traefik_service_name(sleepy)]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:8080"}
    ]


async def test_prometheus_sd_filters_and_refuses_a_bad_one_naming_it(make_api: Make) -> None:
    client, _ = await make_api()
    groups = await (
        await client.get(ENDPOINTS[1], params=[("type", "qemu")], headers=bearer(READ))
    ).json()
    assert {g["labels"]["__meta_pve_name"] for g in groups} == {"sleepy"}
    assert ["10.0.0.6:80"] in [g["targets"] for g in groups]
    for query, parameter in ((("type", "vm"),), "type"), ((("colour", "red"),), "colour"):
        resp = await client.get(ENDPOINTS[1], params=list(query), headers=bearer(READ))
        assert resp.status == 400
        problem = await resp.json(content_type=None)
        assert problem["parameter"] == parameter
        assert parameter in problem["detail"]


async def test_ansible_inventory_list_and_host(make_api: Make) -> None:
    client, _ = await make_api()
    inventory = await (await client.get(ENDPOINTS[2], headers=bearer(READ))).json()
    assert inventory["tag_web"] == {"hosts": ["wiki"]}
    assert inventory["_meta"]["hostvars"]["wiki"]["ansible_host"] == "10.0.0.5"
    one = await client.get(ENDPOINTS[2], params={"host": "sleepy"}, headers=bearer(READ))
    assert (await one.json())["vmid"] == 102
    none = await client.get(ENDPOINTS[2], params={"host": "nobody"}, headers=bearer(READ))
    assert await none.json() == {}
    for params in ({"host": " "}, {"list": "1"}):
        bad = await client.get(ENDPOINTS[2], params=params, headers=bearer(READ))
        assert bad.status == 400
