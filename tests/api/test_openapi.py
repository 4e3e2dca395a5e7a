"""The OpenAPI document: valid 3.1, every route of ROUTES in it with its method, its scope as
the security requirement, problem documents as the error answers; served open and built once.
The answers of a real app validate against the models the document is made of."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from pytest_aiohttp import AiohttpClient

from pxproxy.api import models as m
from pxproxy.api import openapi
from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers import ROUTES, Route
from pxproxy.api.handlers.power import ACTIONS
from pxproxy.config.loader import parse_config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

from ..builders import make_guest, make_node

SECRET = "openapi-test-secret-0123"
METHODS = ("get", "post", "put", "delete", "patch")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.document(ROUTES)


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises on any violation of the 3.1 schema (refs resolved too)


def test_every_route_is_documented_with_its_method(document: dict[str, Any]) -> None:
    assert openapi.undocumented(ROUTES) == []
    for route in ROUTES:
        path = openapi.canonical_path(route.path)
        assert route.method.lower() in document["paths"].get(path, {}), f"{route.method} {path}"
    assert len(_operations(document)) == len(ROUTES)


def test_a_route_without_an_entry_is_named_and_left_out() -> None:
    async def handler(_: Any) -> Any:
        raise AssertionError

    extra = Route("GET", "/api/v1/nothing/{ref:.+}", handler)
    routes = (*ROUTES, extra)
    assert openapi.undocumented(routes) == ["GET /api/v1/nothing/{ref:.+}"]
    assert "/api/v1/nothing/{ref}" not in openapi.document(routes)["paths"]


def test_each_operation_requires_its_scope(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"read", "power", "exec", "node-exec"}
    assert all(s == {**s, "type": "http", "scheme": "bearer"} for s in schemes.values())
    security = {(method, path): op["security"] for method, path, op in _operations(document)}
    assert security[("GET", "/health")] == []
    assert security[("GET", "/api/v1/openapi.json")] == []
    assert security[("GET", "/api/v1/guests")] == [{"read": []}]
    assert security[("POST", "/api/v1/guests/{ref}/{action}")] == [{"power": []}]
    assert security[("POST", "/api/v1/guests/{ref}/wake")] == [{"power": []}]
    assert security[("POST", "/exec/{node}/{vmid}")] == [{"exec": []}]
    assert security[("POST", "/exec/{node}")] == [{"node-exec": []}]
    assert security[("GET", "/tail/{node}/{vmid}")] == [{"exec": []}]
    # integrations.public: a token with read, or none on a loopback listener.
    assert security[("GET", "/integrations/traefik")] == [{"read": []}, {}]
    for (method, path), requirement in security.items():
        for alternative in requirement:
            assert set(alternative) <= set(schemes), f"{method} {path}"


def test_errors_are_problem_documents(document: dict[str, Any]) -> None:
    for method, path, op in _operations(document):
        responses = op["responses"]
        if op["security"] and op["security"] != [{"read": []}, {}]:
            assert {"401", "403"} <= set(responses), f"{method} {path}"
        for status, answer in responses.items():
            if int(status) >= 400:
                content = answer["content"]
                assert list(content) == ["application/problem+json"], f"{method} {path}"
                assert content["application/problem+json"]["schema"] == {
                    "$ref": "#/components/schemas/Problem"
                }
    power = document["paths"]["/api/v1/guests/{ref}/{action}"]["post"]["responses"]
    assert {"202", "200", "400", "401", "403", "404", "409", "502", "503", "504"} <= set(power)


def test_streams_say_what_they_send(document: dict[str, Any]) -> None:
    def media(path: str, method: str = "get") -> set[str]:
        ok = next(v for k, v in document["paths"][path][method]["responses"].items() if k < "3")
        return set(ok["content"])

    assert media("/api/v1/guests/{ref}/wake", "post") == {"application/x-ndjson"}
    assert media("/exec/{node}/{vmid}", "post") == {"text/plain", "application/x-ndjson"}
    assert "text/event-stream" in media("/stats/{ref}")
    assert media("/journal/{node}") == {"text/plain"}
    if "/api/v1/events" in document["paths"]:
        assert media("/api/v1/events") == {"text/event-stream"}
    # The event kinds' data objects are components of their own.
    assert set(m.EVENTS) == {
        "hello", "poll", "guests", "stats", "wake", "idle", "routes", "webhook", "overflow"
    }  # fmt: skip
    for model in m.EVENTS.values():
        assert model.__name__ in document["components"]["schemas"]


def test_the_power_actions_are_the_handler_s(document: dict[str, Any]) -> None:
    assert openapi.POWER_ACTIONS == ACTIONS
    params = document["paths"]["/api/v1/guests/{ref}/{action}"]["post"]["parameters"]
    action = next(p for p in params if p["name"] == "action")
    assert action["schema"]["enum"] == list(ACTIONS)


def test_the_exec_body_is_described(document: dict[str, Any]) -> None:
    body = document["paths"]["/exec/{node}/{vmid}"]["post"]["requestBody"]
    assert body["required"] is True
    schema = document["components"]["schemas"]["ExecRequest"]
    assert schema["required"] == ["argv"]
    assert schema["additionalProperties"] is False


# ----------------------------------------------------------------------- served, and honest


GUESTS = (
    make_guest(101, "wiki", ips=("10.0.0.5",), tags=("web",)),
    make_guest(102, "db", kind="qemu", status="stopped", node="pve2"),
    make_guest(103, "web"),
    make_guest(104, "web", node="pve2"),
)


async def _client(aiohttp_client: AiohttpClient) -> Any:
    cfg = parse_config(
        textwrap.dedent(
            f"""
            proxmox:
              - {{name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}}
            api:
              tokens: [{{name: all, secret: {SECRET}, scopes: [read, power, exec]}}]
            routes:
              - {{host: wiki.home.test, guest: "home:101", port: 80}}
              - host: db.home.test
                guest: "home:102"
                port: 5432
                idle: {{timeout: 10m}}
              - {{listen: "127.0.0.1:0", protocol: udp, guest: "home:101", port: 53}}
            """
        ),
        env={},
    )
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build("home", list(GUESTS), (make_node("pve"), make_node("pve2")))
    )
    app = build_app(make_context(cfg, inventory, Metrics(), True))
    return await aiohttp_client(app)


async def test_served_open_and_built_once(aiohttp_client: AiohttpClient) -> None:
    openapi.document_json.cache_clear()
    client = await _client(aiohttp_client)
    first = await client.get("/api/v1/openapi.json")  # no token
    assert first.status == 200
    assert first.content_type == "application/json"
    body = await first.json()
    assert body["paths"]["/api/v1/guests"]["get"]["security"] == [{"read": []}]
    again = await client.get("/api/v1/openapi.json")
    assert await again.text() == json.dumps(body, separators=(",", ":"))
    assert openapi.document_json.cache_info().hits >= 1


ANSWERS: tuple[tuple[str, type[BaseModel] | None, int], ...] = (
    ("/health", m.Health, 200),
    ("/api/v1/guests", m.GuestList, 200),
    ("/api/v1/guests?tag=web", m.GuestList, 200),
    ("/api/v1/guests/home:101", m.Guest, 200),
    ("/api/v1/guests/nothere", m.Problem, 404),
    ("/api/v1/guests/web", m.Problem, 409),
    ("/api/v1/guests?colour=red", m.Problem, 400),
    ("/api/v1/nodes", m.NodeList, 200),
    ("/api/v1/routes", m.RouteList, 200),
    ("/api/v1/lookup?ip=10.0.0.5", m.Lookup, 200),
    ("/api/v1/lookup?host=wiki.home.test", m.Lookup, 200),
    ("/api/v1/lookup?ip=10.9.9.9", m.Problem, 404),
    ("/integrations/prometheus-sd", m.PrometheusTargets, 200),
    ("/integrations/ansible-inventory", m.AnsibleInventory, 200),
    ("/integrations/traefik", m.TraefikConfig, 200),
)


@pytest.mark.parametrize(("path", "model", "status"), ANSWERS)
async def test_real_answers_validate_against_the_models(
    aiohttp_client: AiohttpClient, path: str, model: type[BaseModel], status: int
) -> None:
    client = await _client(aiohttp_client)
    response = await client.get(path, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status == status, await response.text()
    model.model_validate(await response.json(content_type=None))


async def test_a_refusal_is_a_problem_document(aiohttp_client: AiohttpClient) -> None:
    client = await _client(aiohttp_client)
    response = await client.get("/api/v1/guests")  # no token
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    m.Problem.model_validate(await response.json(content_type=None))


def test_the_models_refuse_a_field_they_do_not_know() -> None:
    guest = make_guest(101, "wiki").to_json()
    m.Guest.model_validate(guest)
    with pytest.raises(ValueError, match="extra"):
        m.Guest.model_validate({**guest, "colour": "red"})


# ------------------------------------------------------ what schemathesis found, kept found


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/guests/%02%C2%A2%C3%B8%60%0A/wake"),
        ("GET", "/api/v1/guests/a%0Ab"),
        ("GET", "/nothing%0Ahere"),
    ],
)
async def test_a_path_with_an_encoded_newline_gets_a_problem_document(
    aiohttp_client: AiohttpClient, method: str, path: str
) -> None:
    # aiohttp's `.` stops at a newline: the catch-all missed such paths, and aiohttp answered
    # them itself in text/plain.
    client = await _client(aiohttp_client)
    response = await client.request(method, path, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    m.Problem.model_validate(await response.json(content_type=None))
