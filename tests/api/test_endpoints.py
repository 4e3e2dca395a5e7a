from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.config.loader import parse_config
from pxproxy.config.models import Config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

from ..builders import make_guest, make_node

OPS_SECRET = "ops-secret-0123456789"
POWER_SECRET = "power-only-secret-0123"

WIKI = make_guest(101, "wiki", ips=("10.0.0.5", "fd00::5"), aliases=("docs",), tags=("web", "prod"))
DB = make_guest(102, "db", kind="qemu", status="stopped", node="pve2", ips=("10.0.0.6",))
WEB_A = make_guest(103, "web", ips=("10.0.0.50",))
WEB_B = make_guest(104, "web", ips=("10.0.0.50",), node="pve2")
CI = make_guest(101, "ci", cluster="lab", node="lab1", ips=("10.1.0.5",), tags=("web",))
HOME_NODES = (
    make_node("pve", ip="10.0.0.1"),
    make_node("pve2", ip="10.0.0.2", status="offline"),
)
LAB_NODES = (make_node("lab1", cluster="lab", ip="10.1.0.1"),)

Client = TestClient[Any, Any]


def config(tokens: str = "") -> Config:
    text = textwrap.dedent(
        """
        proxmox:
          - {name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}
          - {name: lab, url: "https://pve.lab:8006", token_id: a@pve!t, secret: s}
        """
    )
    if tokens:
        text += "api:\n  tokens:\n" + textwrap.indent(textwrap.dedent(tokens), "    ")
    return parse_config(text, env={})


TOKENS = f"""
- {{name: ops, secret: {OPS_SECRET}, scopes: [read, power]}}
- {{name: power, secret: {POWER_SECRET}, scopes: [power]}}
"""


def publish_all(inventory: Inventory) -> None:
    inventory.publish(ClusterSnapshot.build("home", [WIKI, DB, WEB_A, WEB_B], HOME_NODES))
    inventory.publish(ClusterSnapshot.build("lab", [CI], LAB_NODES))


Make = Callable[..., Awaitable[tuple[Client, Inventory, Metrics]]]


@pytest.fixture
def make_api(aiohttp_client: AiohttpClient) -> Make:
    async def make(
        *, tokens: str = "", loopback: bool = True, publish: bool = True
    ) -> tuple[Client, Inventory, Metrics]:
        cfg = config(tokens)
        inventory = Inventory()
        if publish:
            publish_all(inventory)
        metrics = Metrics()
        metrics.watch_inventory(lambda: inventory.snapshot, cfg.cluster_names)
        client = await aiohttp_client(build_app(make_context(cfg, inventory, metrics, loopback)))
        return client, inventory, metrics

    return make


@pytest.fixture
async def api(make_api: Make) -> Client:
    client, _, _ = await make_api()
    return client


async def problem(resp: ClientResponse, status: int) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json(content_type="application/problem+json")
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


async def ok_json(resp: ClientResponse) -> Any:
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


# ----------------------------------------------------------------- /health


async def test_health_ok(api: Client) -> None:
    body = await ok_json(await api.get("/health"))
    assert body["status"] == "ok"
    assert [c["name"] for c in body["clusters"]] == ["home", "lab"]
    home = body["clusters"][0]
    assert home["ok"] is True
    assert home["guests"] == 4
    assert home["nodes"] == 2
    assert 0 <= home["last_poll_age_s"] < 60
    assert "error" not in home


async def test_health_degraded_shows_error(make_api: Make) -> None:
    client, inventory, _ = await make_api()
    lab = inventory.snapshot.clusters["lab"]
    inventory.publish(lab.failed("HTTP 595: No route to host (/cluster/resources)"))
    resp = await client.get("/health")
    body = await ok_json(resp)  # still 200: stale data keeps serving
    assert body["status"] == "degraded"
    lab_entry = body["clusters"][1]
    assert lab_entry["ok"] is False
    assert lab_entry["error"] == "HTTP 595: No route to host (/cluster/resources)"
    assert lab_entry["guests"] == 1  # the last data is still there
    assert body["clusters"][0]["ok"] is True


async def test_health_before_first_poll(make_api: Make) -> None:
    client, _, _ = await make_api(publish=False)
    body = await ok_json(await client.get("/health"))
    assert body["status"] == "degraded"
    assert [c["error"] for c in body["clusters"]] == ["not polled yet", "not polled yet"]
    assert all(c["last_poll_age_s"] is None for c in body["clusters"])


async def test_health_shows_warnings(make_api: Make) -> None:
    client, inventory, _ = await make_api()
    inventory.publish(
        ClusterSnapshot.build("lab", [CI], LAB_NODES, warnings=("needs Sys.Audit on /",))
    )
    body = await ok_json(await client.get("/health"))
    assert body["clusters"][1]["warnings"] == ["needs Sys.Audit on /"]


# ----------------------------------------------------------------- /api/v1/guests


async def test_list_guests(api: Client) -> None:
    body = await ok_json(await api.get("/api/v1/guests"))
    assert [(g["cluster"], g["id"]) for g in body] == [
        ("home", "lxc/101"),
        ("home", "qemu/102"),
        ("home", "lxc/103"),
        ("home", "lxc/104"),
        ("lab", "lxc/101"),
    ]
    wiki = body[0]
    assert wiki["name"] == "wiki"
    assert wiki["vmid"] == 101
    assert wiki["type"] == "lxc"
    assert wiki["node"] == "pve"
    assert wiki["status"] == "running"
    assert wiki["ips"] == ["10.0.0.5", "fd00::5"]
    assert wiki["tags"] == ["web", "prod"]
    assert wiki["aliases"] == ["docs"]
    assert wiki["uptime"] == 100


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cluster=lab", ["lab:101"]),
        ("node=pve2", ["home:102", "home:104"]),
        ("type=qemu", ["home:102"]),
        ("status=stopped", ["home:102"]),
        ("name=web", ["home:103", "home:104"]),
        ("tag=web", ["home:101", "lab:101"]),
        ("tag=web&cluster=home", ["home:101"]),
        ("status=running&node=pve", ["home:101", "home:103"]),
        ("name=nothing", []),
    ],
)
async def test_list_guests_filters(api: Client, query: str, expected: list[str]) -> None:
    body = await ok_json(await api.get(f"/api/v1/guests?{query}"))
    assert [f"{g['cluster']}:{g['vmid']}" for g in body] == expected


async def test_list_guests_unknown_filter(api: Client) -> None:
    body = await problem(await api.get("/api/v1/guests?colour=red"), 400)
    assert "'colour'" in body["detail"]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("wiki", "home:101"),
        ("WIKI", "home:101"),
        ("home:101", "home:101"),
        ("lab:101", "lab:101"),
        ("pve/101", "home:101"),
        ("lab1/101", "lab:101"),
        ("102", "home:102"),
        ("qemu/102", "home:102"),
        ("ci", "lab:101"),
    ],
)
async def test_get_guest(api: Client, ref: str, expected: str) -> None:
    body = await ok_json(await api.get(f"/api/v1/guests/{ref}"))
    assert f"{body['cluster']}:{body['vmid']}" == expected


@pytest.mark.parametrize("ref", ["nothing", "999", "home:999", "nowhere:101", "%C2%B2", "1" * 5000])
async def test_get_guest_404(api: Client, ref: str) -> None:
    body = await problem(await api.get(f"/api/v1/guests/{ref}"), 404)
    assert "no guest matches ref" in body["detail"]


async def test_get_guest_404_names_the_ref(api: Client) -> None:
    body = await problem(await api.get("/api/v1/guests/nothing"), 404)
    assert body["detail"] == "no guest matches ref 'nothing'"


@pytest.mark.parametrize(
    ("ref", "refs"),
    [
        ("web", ["home:103", "home:104"]),
        ("101", ["home:101", "lab:101"]),
        ("lxc/101", ["home:101", "lab:101"]),
    ],
)
async def test_get_guest_409_with_candidates(api: Client, ref: str, refs: list[str]) -> None:
    body = await problem(await api.get(f"/api/v1/guests/{ref}"), 409)
    assert body["title"] == "Ambiguous"
    assert "use cluster:vmid or node/vmid" in body["detail"]
    assert sorted(c["ref"] for c in body["candidates"]) == refs
    for c in body["candidates"]:
        assert set(c) >= {"id", "ref", "cluster", "node", "vmid", "name", "status"}


# ----------------------------------------------------------------- /api/v1/lookup


@pytest.mark.parametrize(
    ("query", "ref"),
    [
        ("ip=10.0.0.5", "home:101"),
        ("ip=%5Bfd00::5%5D", "home:101"),
        ("ip=FD00:0::5", "home:101"),
        ("ip=10.1.0.5", "lab:101"),
        ("host=wiki.example.com", "home:101"),
        ("host=Wiki.", "home:101"),
        ("host=docs.example.com", "home:101"),
        ("host=db", "home:102"),
        ("alias=docs", "home:101"),
    ],
)
async def test_lookup_guest(api: Client, query: str, ref: str) -> None:
    body = await ok_json(await api.get(f"/api/v1/lookup?{query}"))
    assert body["match"] == query.split("=", 1)[0]
    assert "node" not in body
    assert f"{body['guest']['cluster']}:{body['guest']['vmid']}" == ref


@pytest.mark.parametrize(
    ("query", "node"), [("ip=10.0.0.2", "pve2"), ("host=lab1.example.com", "lab1")]
)
async def test_lookup_node(api: Client, query: str, node: str) -> None:
    body = await ok_json(await api.get(f"/api/v1/lookup?{query}"))
    assert "guest" not in body
    assert body["node"]["name"] == node


@pytest.mark.parametrize(
    "query", ["ip=10.9.9.9", "ip=garbage", "host=nothing.example.com", "alias=nothing"]
)
async def test_lookup_404(api: Client, query: str) -> None:
    body = await problem(await api.get(f"/api/v1/lookup?{query}"), 404)
    kind, value = query.split("=", 1)
    assert body["query"] == {kind: value}
    assert repr(value) in body["detail"]


async def test_lookup_409_ip(api: Client) -> None:
    body = await problem(await api.get("/api/v1/lookup?ip=10.0.0.50"), 409)
    assert sorted(c["ref"] for c in body["candidates"]) == ["home:103", "home:104"]


async def test_lookup_409_host(api: Client) -> None:
    body = await problem(await api.get("/api/v1/lookup?host=web.example.com"), 409)
    assert sorted(c["id"] for c in body["candidates"]) == ["lxc/103", "lxc/104"]


async def test_lookup_running_owner_of_ip_wins(make_api: Make) -> None:
    client, inventory, _ = await make_api()
    old = make_guest(200, "old", status="stopped", ips=("10.0.0.77",))
    new = make_guest(201, "new", ips=("10.0.0.77",))
    inventory.publish(ClusterSnapshot.build("home", [old, new], HOME_NODES))
    body = await ok_json(await client.get("/api/v1/lookup?ip=10.0.0.77"))
    assert body["guest"]["name"] == "new"


@pytest.mark.parametrize(
    "query",
    [
        "",
        "ip=10.0.0.5&host=wiki",
        "host=wiki&alias=docs",
        "ip=10.0.0.5&extra=1",
        "name=wiki",
        "ip=",
        "host=" + "a" * 254,
    ],
)
async def test_lookup_400(api: Client, query: str) -> None:
    body = await problem(await api.get(f"/api/v1/lookup?{query}"), 400)
    assert "?ip=" in body["detail"] or "characters" in body["detail"]


async def test_lookup_longest_dns_name_is_accepted(api: Client) -> None:
    await problem(await api.get("/api/v1/lookup?host=" + "a" * 253), 404)


# ----------------------------------------------------------------- /api/v1/nodes


async def test_nodes(api: Client) -> None:
    body = await ok_json(await api.get("/api/v1/nodes"))
    assert [(n["cluster"], n["name"], n["status"], n["ip"]) for n in body] == [
        ("home", "pve", "online", "10.0.0.1"),
        ("home", "pve2", "offline", "10.0.0.2"),
        ("lab", "lab1", "online", "10.1.0.1"),
    ]


# ----------------------------------------------------------------- /metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics(api: Client) -> None:
    assert (await api.get("/api/v1/lookup?ip=10.0.0.5")).status == 200
    assert (await api.get("/api/v1/lookup?ip=10.0.0.50")).status == 409
    assert (await api.get("/api/v1/lookup?alias=nothing")).status == 404
    assert (await api.get("/api/v1/guests/nothing")).status == 404
    resp = await api.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    got = samples(await resp.text())
    assert (
        got[("pxproxy_guests", (("cluster", "home"), ("status", "running"), ("type", "lxc")))] == 3
    )
    assert (
        got[("pxproxy_guests", (("cluster", "home"), ("status", "stopped"), ("type", "qemu")))] == 1
    )
    assert (
        got[("pxproxy_guests", (("cluster", "lab"), ("status", "running"), ("type", "lxc")))] == 1
    )
    assert got[("pxproxy_nodes", (("cluster", "home"), ("status", "offline")))] == 1
    req = "pxproxy_api_requests_total"
    assert got[(req, (("endpoint", "/api/v1/lookup"), ("status", "200")))] == 1
    assert got[(req, (("endpoint", "/api/v1/lookup"), ("status", "409")))] == 1
    assert got[(req, (("endpoint", "/api/v1/guests/{ref}"), ("status", "404")))] == 1
    lookups = "pxproxy_lookups_total"
    assert got[(lookups, (("kind", "ip"), ("result", "found")))] == 1
    assert got[(lookups, (("kind", "ip"), ("result", "ambiguous")))] == 1
    assert got[(lookups, (("kind", "alias"), ("result", "missing")))] == 1
    for cluster in ("home", "lab"):
        age = got[("pxproxy_snapshot_age_seconds", (("cluster", cluster),))]
        assert 0 <= age < 60
        assert got[("pxproxy_cluster_up", (("cluster", cluster),))] == 1


async def test_metrics_mark_stale_cluster(make_api: Make) -> None:
    client, inventory, _ = await make_api()
    inventory.publish(inventory.snapshot.clusters["lab"].failed("down"))
    got = samples(await (await client.get("/metrics")).text())
    assert got[("pxproxy_cluster_up", (("cluster", "lab"),))] == 0
    assert got[("pxproxy_cluster_up", (("cluster", "home"),))] == 1
    assert ("pxproxy_snapshot_age_seconds", (("cluster", "lab"),)) in got


# ----------------------------------------------------------------- errors at the edge


async def test_unknown_path_is_a_problem_document(api: Client) -> None:
    await problem(await api.get("/api/v1/nothing"), 404)


async def test_wrong_method_says_what_is_allowed(api: Client) -> None:
    resp = await api.post("/api/v1/nodes")
    await problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


@pytest.mark.parametrize("path", ["/health", "/metrics", "/api/v1/guests", "/api/v1/nodes"])
async def test_head_answers_where_get_does(api: Client, path: str) -> None:
    get = await api.get(path)
    head = await api.head(path)
    assert head.status == get.status == 200
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert await head.read() == b""


async def test_streams_take_no_head(api: Client) -> None:
    # HEAD of a stream would follow it with nobody reading: refused, GET named instead.
    resp = await api.head("/stats/wiki")
    assert resp.status == 405
    assert "GET" in resp.headers["Allow"]


# ----------------------------------------------------------------- auth

READ_PATHS = ["/api/v1/guests", "/api/v1/guests/wiki", "/api/v1/lookup?ip=10.0.0.5", "/metrics"]


@pytest.mark.parametrize("path", READ_PATHS)
async def test_tokens_configured_requires_bearer(make_api: Make, path: str) -> None:
    client, _, _ = await make_api(tokens=TOKENS)
    resp = await client.get(path)
    body = await problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in body["detail"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-secret-0123456789",
        f"Bearer {OPS_SECRET}x",
        f"Basic {OPS_SECRET}",
        OPS_SECRET,
        "Bearer ",
    ],
)
async def test_wrong_bearer_is_401(make_api: Make, header: str) -> None:
    client, _, _ = await make_api(tokens=TOKENS)
    resp = await client.get("/api/v1/guests", headers={"Authorization": header})
    body = await problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "not one of api.tokens" in body["detail"]


@pytest.mark.parametrize("path", READ_PATHS)
async def test_right_bearer_is_200(make_api: Make, path: str) -> None:
    client, _, _ = await make_api(tokens=TOKENS)
    resp = await client.get(path, headers={"Authorization": f"Bearer {OPS_SECRET}"})
    assert resp.status == 200


async def test_health_is_open_with_tokens(make_api: Make) -> None:
    client, _, _ = await make_api(tokens=TOKENS)
    assert (await ok_json(await client.get("/health")))["status"] == "ok"


async def test_token_without_read_scope_is_403(make_api: Make) -> None:
    client, _, _ = await make_api(tokens=TOKENS)
    resp = await client.get("/api/v1/guests", headers={"Authorization": f"Bearer {POWER_SECRET}"})
    body = await problem(resp, 403)
    assert body["detail"] == "token 'power' lacks the 'read' scope"


async def test_no_tokens_on_non_loopback_listener(make_api: Make) -> None:
    client, _, _ = await make_api(loopback=False)
    resp = await client.get("/api/v1/guests")
    body = await problem(resp, 401)
    assert "no api.tokens are configured" in body["detail"]
    assert "non-loopback" in body["detail"]
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    # Even a bearer does not help: there is nothing to check it against.
    resp = await client.get("/api/v1/guests", headers={"Authorization": f"Bearer {OPS_SECRET}"})
    await problem(resp, 401)
    assert (await client.get("/health")).status == 200


async def test_no_tokens_on_loopback_serves_reads(make_api: Make) -> None:
    client, _, _ = await make_api(loopback=True)
    assert len(await ok_json(await client.get("/api/v1/guests"))) == 5
    assert (await client.get("/metrics")).status == 200


async def test_unauthorised_requests_are_counted(make_api: Make) -> None:
    client, _, metrics = await make_api(tokens=TOKENS)
    await client.get("/api/v1/nodes")
    got = samples(metrics.render().decode())
    key = ("pxproxy_api_requests_total", (("endpoint", "/api/v1/nodes"), ("status", "401")))
    assert got[key] == 1


async def test_routes_lists_settings_and_states(aiohttp_client: Any) -> None:
    from pxproxy.api.app import build_app, make_context
    from pxproxy.config.models import Config, RouteConfig
    from pxproxy.inventory.store import Inventory
    from pxproxy.metrics import Metrics
    from pxproxy.wake.contract import AlwaysReady, Gate, WakeState

    config = Config.model_validate(
        {
            "proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!b", "secret": "x"}],
            "routes": [
                {"host": ["wiki.example.com", "*.wiki.example.com"], "guest": "wiki", "port": 80},
                {
                    "listen": "127.0.0.1:25565",
                    "guest": 200,
                    "port": 25565,
                    "idle": {"timeout": "30m", "ready": {"http": "/healthz"}},
                },
            ],
        }
    )

    class Asleep(AlwaysReady):
        state = WakeState.ASLEEP

    class Wake:
        def states(self) -> list[tuple[int, WakeState]]:
            return [(0, WakeState.READY), (1, WakeState.ASLEEP)]

        def gate_for(self, route: RouteConfig | int) -> Gate:
            assert isinstance(route, RouteConfig)
            return Asleep() if route.idle else AlwaysReady()

    app = build_app(make_context(config, Inventory(), Metrics(), True, wake=Wake()))
    client = await aiohttp_client(app)
    resp = await client.get("/api/v1/routes")
    body = await resp.json()
    assert resp.status == 200
    assert body[0]["host"] == ["wiki.example.com", "*.wiki.example.com"]
    assert (body[0]["idle"], body[0]["state"]) == (None, "ready")
    assert body[1]["listen"] == "127.0.0.1:25565"
    assert body[1]["guest"] == "200"
    assert body[1]["idle"]["timeout_s"] == 1800
    assert body[1]["idle"]["ready"] == {"http": "/healthz"}
    assert body[1]["state"] == "asleep"
