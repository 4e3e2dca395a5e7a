"""?host= decides as the proxy does: route hosts (wildcards included) first, then names."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from aiohttp import ClientResponse
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.config.loader import parse_config
from pxproxy.config.models import Config
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.routing.host_lookup import lookup_host
from pxproxy.routing.hosts import RouteTable

from ..builders import make_guest, make_node

WIKI = make_guest(201, "wiki", ips=("10.0.0.5",))
SHOP = make_guest(202, "shop", ips=("10.0.0.6",))
# A guest whose own name is a host the routes send elsewhere: the route must win.
DECOY = make_guest(203, "blog", ips=("10.0.0.7",))
NODES = (make_node("pve", ip="10.0.0.1"),)


def config() -> Config:
    return parse_config(
        textwrap.dedent(
            """
            proxmox:
              - {name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}
            routes:
              - {host: [wiki.example.com, "*.wiki.example.com"], guest: wiki, port: 80}
              - {host: "*.example.com", guest: shop, port: 80}
              - {host: blog.example.org, guest: wiki, port: 80}
              - {host: gone.example.com, guest: nothere, port: 80}
            """
        ),
        env={},
    )


def snapshot() -> Snapshot:
    return Snapshot({"home": ClusterSnapshot.build("home", [WIKI, SHOP, DECOY], NODES)})


@pytest.mark.parametrize(
    ("host", "guest", "route"),
    [
        ("a.wiki.example.com", "wiki", "wiki.example.com"),  # the wildcard of the wiki route
        ("x.y.wiki.example.com.", "wiki", "wiki.example.com"),
        ("A.Wiki.Example.COM:8443", "wiki", "wiki.example.com"),  # as a Host header: port, case
        ("wiki.example.com", "wiki", "wiki.example.com"),
        ("other.example.com", "shop", "*.example.com"),  # the shorter wildcard
        ("blog.example.org", "wiki", "blog.example.org"),  # route beats the guest named blog
    ],
)
def test_route_hosts_decide_first(host: str, guest: str, route: str) -> None:
    table = RouteTable(config().routes)
    found = lookup_host(table, snapshot(), host)
    assert found.route is not None
    assert found.route.name == route
    # Exactly what the proxy would pick for that Host header.
    assert table.match(host) == found.route
    assert [g.name for g in found.match.guests] == [guest]


def test_without_a_route_the_name_rules_answer() -> None:
    found = lookup_host(RouteTable(config().routes), snapshot(), "blog.lan")
    assert found.route is None
    assert [g.name for g in found.match.guests] == ["blog"]
    assert lookup_host(RouteTable(()), snapshot(), "a.wiki.example.com").match.total == 0


def test_a_route_to_a_missing_guest_does_not_fall_back_to_names() -> None:
    # "gone" is not a guest, and no other guest may stand in for what the proxy would 502.
    found = lookup_host(RouteTable(config().routes), snapshot(), "gone.example.com")
    assert found.route is not None
    assert found.route.route.guest == "nothere"
    assert found.match.total == 0


async def _api_get(aiohttp_client: AiohttpClient, path: str) -> ClientResponse:
    inventory = Inventory()
    for c in snapshot().clusters.values():
        inventory.publish(c)
    cfg = config()
    client = await aiohttp_client(build_app(make_context(cfg, inventory, Metrics(), True)))
    return await client.get(path)


async def test_api_wildcard_host_lookup(aiohttp_client: AiohttpClient) -> None:
    resp = await _api_get(aiohttp_client, "/api/v1/lookup?host=a.wiki.example.com")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert (body["match"], body["query"], body["route"]) == (
        "host",
        "a.wiki.example.com",
        "wiki.example.com",
    )
    assert body["guest"]["name"] == "wiki"


async def test_api_route_to_missing_guest_is_404_naming_the_route(
    aiohttp_client: AiohttpClient,
) -> None:
    resp = await _api_get(aiohttp_client, "/api/v1/lookup?host=gone.example.com")
    assert resp.status == 404
    detail = (await resp.json(content_type=None))["detail"]
    assert "route 'gone.example.com'" in detail
    assert "'nothere'" in detail
