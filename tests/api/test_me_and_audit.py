"""`GET /api/v1/me` (who the token is, for the dashboard) and `GET /api/v1/audit` (the recent
records, filtered by the token's allowlist, and whether the audit file's chain verifies)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.audit import AuditLog, AuditRecord
from pxproxy.audit.chained_file import ChainedFile
from pxproxy.config.loader import parse_config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

from ..builders import make_guest, make_node

Client = TestClient[Any, Any]
ADMIN = "audit-admin-secret-012345"
READER = "audit-reader-secret-01234"  # read, allowlist lab:7381 and "web7382"
POWERLESS = "audit-power-secret-012345"  # power only, no read
EXECER = "audit-exec-secret-0123456"  # read + exec, allowlist lab:7383

TOKENS = f"""
- {{name: admin, secret: {ADMIN}, scopes: [read, power, exec], guests: ["*"]}}
- {{name: reader, secret: {READER}, scopes: [read], guests: ["lab:7381", "web7382"]}}
- {{name: powerless, secret: {POWERLESS}, scopes: [power]}}
- {{name: execer, secret: {EXECER}, scopes: [read, exec], guests: ["lab:7383"]}}
"""

GUESTS = [
    make_guest(7381, "app7381", cluster="lab", node="pve1"),
    make_guest(7382, "web7382", cluster="lab", node="pve1", tags=("web",)),
    make_guest(7383, "db7383", cluster="lab", node="pve1", kind="qemu"),
    make_guest(7384, "other7384", cluster="lab", node="pve1", status="stopped"),
]

Make = Callable[..., Awaitable[tuple[Client, AuditLog]]]


@pytest.fixture
def make_api(aiohttp_client: AiohttpClient) -> Make:
    async def make(audit: AuditLog | None = None) -> tuple[Client, AuditLog]:
        text = textwrap.dedent(
            """
            proxmox:
              - {name: lab, url: "https://pve.lab:8006", token_id: a@pve!t, secret: s}
            api:
              tokens:
            """
        ) + textwrap.indent(textwrap.dedent(TOKENS), "    ")
        config = parse_config(text, env={})
        inventory = Inventory()
        inventory.publish(ClusterSnapshot.build("lab", GUESTS, (make_node("pve1", cluster="lab"),)))
        log = audit or AuditLog()
        ctx = make_context(config, inventory, Metrics(), loopback=True, audit=log)
        return await aiohttp_client(build_app(ctx)), log

    return make


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def get(api: Client, path: str, secret: str | None) -> tuple[int, Any]:
    async with api.get(path, headers=auth(secret) if secret else {}) as resp:
        return resp.status, await resp.json(content_type=None)


# ------------------------------------------------------------------------------- /api/v1/me


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        (ADMIN, {"name": "admin", "scopes": ["exec", "power", "read"], "guests": ["*"]}),
        (READER, {"name": "reader", "scopes": ["read"], "guests": ["lab:7381", "web7382"]}),
        # No read scope needed: any valid token may learn what it may do.
        (POWERLESS, {"name": "powerless", "scopes": ["power"], "guests": ["*"]}),
    ],
)
async def test_me_tells_the_token_what_it_may_do(
    make_api: Make, secret: str, expected: dict[str, Any]
) -> None:
    api, _ = await make_api()
    assert await get(api, "/api/v1/me", secret) == (200, expected)


async def test_me_needs_a_valid_token(make_api: Make) -> None:
    api, _ = await make_api()
    status, body = await get(api, "/api/v1/me", None)
    assert status == 401
    status, body = await get(api, "/api/v1/me", "not-a-token-of-ours")
    assert (status, body["detail"]) == (401, "the bearer token is not one of api.tokens")


async def test_no_power_scope_is_refused_by_the_api_whatever_the_page_shows(
    make_api: Make,
) -> None:
    """The dashboard hides power buttons from a read token; the API refuses anyway."""
    api, log = await make_api()
    for action in ("start", "stop", "shutdown", "reboot", "wake"):
        async with api.post(f"/api/v1/guests/lab:7381/{action}", headers=auth(READER)) as resp:
            body = await resp.json()
            assert resp.status == 403, action
            assert body["detail"] == "token 'reader' lacks the 'power' scope"
    async with api.post("/exec/pve1/7381", headers=auth(READER), json={"argv": ["id"]}) as resp:
        assert resp.status == 403
    assert [r.result.split(":")[0] for r in log.records] == ["denied"] * 6


# ---------------------------------------------------------------------------- /api/v1/audit


def record(token: str, guest: str, action: str = "start", **detail: Any) -> AuditRecord:
    return AuditRecord(token=token, action=action, guest=guest, detail=detail, result="ok")


def fill(log: AuditLog) -> None:
    log.write(record("admin", "lab:7381"))
    log.write(record("admin", "lab:7382", "exec", argv=["mysql", "-pSECRET"], node="pve1"))
    log.write(record("admin", "lab:7383", "journal", argv=["journalctl", "-n", "5"]))
    log.write(record("admin", "lab:7384", "stop"))
    log.write(record("admin", "node/pve1", "exec", argv=["uptime"]))
    log.write(record("reader", "web*", "start"))  # a refusal, as the ref was asked for
    log.write(record("admin", "lab:9999", "start"))  # a guest gone from the inventory


def seen(body: dict[str, Any]) -> list[str]:
    return [f"{e['token']} {e['action']} {e['guest']}" for e in body["entries"]]


async def test_audit_entries_newest_first_for_an_unrestricted_token(make_api: Make) -> None:
    api, log = await make_api()
    fill(log)
    status, body = await get(api, "/api/v1/audit", ADMIN)
    assert status == 200
    assert seen(body) == [
        "admin start lab:9999",
        "reader start web*",
        "admin exec node/pve1",
        "admin stop lab:7384",
        "admin journal lab:7383",
        "admin exec lab:7382",
        "admin start lab:7381",
    ]
    assert body["entries"][5]["detail"] == {"argv": ["mysql", "-pSECRET"], "node": "pve1"}
    assert set(body["entries"][0]) == {
        "token", "action", "guest", "detail", "result", "duration_s", "at"
    }  # fmt: skip


async def test_the_allowlist_filters_the_audit_and_commands_need_exec(make_api: Make) -> None:
    api, log = await make_api()
    fill(log)
    status, body = await get(api, "/api/v1/audit", READER)
    assert status == 200
    # Its guests (by cluster:vmid and by a unique name), and its own refusal; no node, no
    # guest outside the allowlist, none gone from the inventory.
    assert seen(body) == ["reader start web*", "admin exec lab:7382", "admin start lab:7381"]
    # Without the exec scope, the command is not shown (it may hold a password).
    assert body["entries"][1]["detail"] == {"node": "pve1", "argv_hidden": "needs the exec scope"}
    assert "SECRET" not in json.dumps(body)

    status, body = await get(api, "/api/v1/audit", EXECER)
    assert seen(body) == ["admin journal lab:7383"]
    assert body["entries"][0]["detail"]["argv"] == ["journalctl", "-n", "5"]


async def test_the_audit_needs_the_read_scope(make_api: Make) -> None:
    api, log = await make_api()
    fill(log)
    assert (await get(api, "/api/v1/audit", None))[0] == 401
    status, body = await get(api, "/api/v1/audit", POWERLESS)
    assert (status, body["detail"]) == (403, "token 'powerless' lacks the 'read' scope")
    assert log.records[-1].action == "audit"
    assert log.records[-1].result.startswith("denied")


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("limit=0", "limit must be an integer in 1..1000, not '0'"),
        ("limit=1001", "limit must be an integer in 1..1000, not '1001'"),
        ("limit=-1", "limit must be an integer in 1..1000, not '-1'"),
        ("limit=1e3", "limit must be an integer in 1..1000, not '1e3'"),
        ("since=1", "unknown query parameter 'since'; use limit"),
    ],
)
async def test_bad_audit_queries_get_a_clear_400(make_api: Make, query: str, detail: str) -> None:
    api, _ = await make_api()
    status, body = await get(api, f"/api/v1/audit?{query}", ADMIN)
    assert (status, body["detail"]) == (400, detail)


async def test_the_limit_keeps_the_newest(make_api: Make) -> None:
    api, log = await make_api()
    fill(log)
    _, body = await get(api, "/api/v1/audit?limit=2", ADMIN)
    assert seen(body) == ["admin start lab:9999", "reader start web*"]


async def test_without_an_audit_file_nothing_is_chained(make_api: Make) -> None:
    api, _ = await make_api()
    status, body = await get(api, "/api/v1/audit", ADMIN)
    assert status == 200
    assert body["chain"]["state"] == "unchained"
    assert body["chain"]["verified"] is None
    assert "audit.path is not set" in body["chain"]["error"]


async def test_the_chain_of_the_audit_file_verifies(make_api: Make, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(ChainedFile(str(path)))
    api, _ = await make_api(log)
    fill(log)
    _, body = await get(api, "/api/v1/audit", ADMIN)
    chain = body["chain"]
    assert (chain["state"], chain["verified"], chain["lines"]) == ("ok", True, 7)
    assert chain["head"]["seq"] == 7
    assert chain["file"] == str(path)
    log.close()


async def test_an_edited_audit_file_shows_broken(make_api: Make, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(ChainedFile(str(path)))
    api, _ = await make_api(log)
    fill(log)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"journalctl", b"journalctX")
    path.write_bytes(b"".join(lines))
    _, body = await get(api, "/api/v1/audit", ADMIN)
    chain = body["chain"]
    assert (chain["state"], chain["verified"]) == ("broken", False)
    assert "audit.jsonl:3: changed after it was written" in chain["error"]
    log.close()


async def test_lines_cut_from_the_end_show_broken(make_api: Make, tmp_path: Path) -> None:
    """Not visible to `audit verify` alone: the daemon knows the last record it wrote."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(ChainedFile(str(path)))
    api, _ = await make_api(log)
    fill(log)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))
    _, body = await get(api, "/api/v1/audit", ADMIN)
    chain = body["chain"]
    assert chain["state"] == "broken"
    assert "ends at seq 5, but pxproxy wrote up to seq 7" in chain["error"]
    log.close()


async def test_me_without_tokens_on_loopback_is_anonymous(aiohttp_client: AiohttpClient) -> None:
    """A loopback API without api.tokens: the page signs in without asking for a token."""
    config = parse_config(
        'proxmox:\n  - {name: lab, url: "https://pve.lab:8006", token_id: a@pve!t, secret: s}\n',
        env={},
    )
    ctx = make_context(config, Inventory(), Metrics(), loopback=True)
    api = await aiohttp_client(build_app(ctx))
    assert await get(api, "/api/v1/me", None) == (
        200,
        {"name": "anonymous", "scopes": ["read"], "guests": []},
    )
