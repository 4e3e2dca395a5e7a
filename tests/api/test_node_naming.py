"""Nodes named per cluster (`home:pve1`), by alias (`hv1`) or bare, in every endpoint that
takes a node; node exec (POST /exec/{node}) and its node-exec scope; node stats as text.

Two labs, each with a node pve1, so a bare `pve1` is ambiguous (409 with the cluster:node refs)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.audit import AuditLog
from pxproxy.api.handlers.guest_streams import guest_streams_setup
from pxproxy.api.handlers.stats import setup_stats
from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory
from pxproxy.lab.certs import LabCertificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster
from pxproxy.metrics import Metrics
from pxproxy.pve.client import PveClient
from pxproxy.streams.shell_runner import StreamSettings

from ..streams.test_formatting import LINE_RE
from ..support import HOST, lab_cluster

NODE_OPS = "node-ops-token-0123456789"  # read, exec, node-exec
OPS = "guest-ops-token-0123456789"  # read, exec and guests ['*']: not enough for node exec
# vmid on pve1 of both labs (ambiguous as pve1/9641), and one only in home.
BOTH, HOME_ONLY = 9641, 9642
MODEL = "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz"


def auth(secret: str = NODE_OPS) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Stack:
    http: Any
    home: LabServer
    away: LabServer
    audit: AuditLog

    def sessions(self) -> int:
        return self.home.consoles.sessions_opened + self.away.consoles.sessions_opened


def cluster(lab: LabServer, name: str) -> dict[str, Any]:
    # Root's password as well as the token: shells need root@pam's ticket.
    return lab_cluster(lab, name=name, username="root@pam", password=lab.credentials.root_password)


@contextlib.asynccontextmanager
async def stack(
    home: LabServer, away: LabServer, aiohttp_client: AiohttpClient
) -> AsyncIterator[Stack]:
    config = Config.model_validate(
        {
            "proxmox": [cluster(home, "home"), cluster(away, "away")],
            "nodes": {"pve1": {"aliases": ["hv1"]}, "home:pve2": {"aliases": ["store"]}},
            "api": {
                "tokens": [
                    {
                        "name": "node-ops",
                        "secret": NODE_OPS,
                        "scopes": ["read", "exec", "node-exec"],
                    },
                    {"name": "ops", "secret": OPS, "scopes": ["read", "exec"], "guests": ["*"]},
                ]
            },
        }
    )
    inventory = Inventory()
    clients: dict[str, PveClient] = {}
    try:
        for name, entry in zip(("home", "away"), config.proxmox, strict=True):
            poller, client = make_poller(name, entry, inventory, config, None)
            clients[name] = client
            await poller.poll_once()
        ctx = make_context(config, inventory, Metrics(), True, clients=clients)
        settings = StreamSettings(exec_timeout_s=10.0, snapshot_timeout_s=10.0)
        app = build_app(ctx, setup=[setup_stats, guest_streams_setup(settings)])
        http = await aiohttp_client(app)
        try:
            yield Stack(http, home, away, ctx.audit)
        finally:
            await http.close()
    finally:
        for client in clients.values():
            await client.close()


@pytest.fixture
async def away(lab_certificate: LabCertificate) -> AsyncIterator[LabServer]:
    lab = LabCluster()
    lab.add_node("pve1")
    server = LabServer(lab, host=HOST, port=0, certificate=lab_certificate)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def labs(
    lab_server: LabServer, away: LabServer, aiohttp_client: AiohttpClient
) -> AsyncIterator[Stack]:
    lab_server.cluster.add_node("pve2")
    lab_server.cluster.add_guest(BOTH, "lxc", "home-ct", "pve1", status="running")
    lab_server.cluster.add_guest(HOME_ONLY, "lxc", "home-two", "pve1", status="running")
    away.cluster.add_guest(BOTH, "lxc", "away-ct", "pve1", status="running")
    async with stack(lab_server, away, aiohttp_client) as s:
        yield s


async def status_and_body(resp: Any) -> tuple[int, str]:
    return resp.status, await resp.text()


async def assert_ambiguous(resp: Any) -> None:
    assert resp.status == 409, await resp.text()
    body = await resp.json(content_type=None)
    assert {c["ref"] for c in body["candidates"]} == {"home:pve1", "away:pve1"}


# ------------------------------------------------------------------- cluster:node everywhere


async def test_node_stats_by_cluster_node_alias_and_ambiguity(labs: Stack) -> None:
    resp = await labs.http.get("/stats/node/away:pve1?stream=0", headers=auth())
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-ndjson"  # still the default
    sample = await resp.json(content_type=None)
    assert (sample["node"], sample["cpu_model"]) == ("pve1", MODEL)
    assert labs.away.api.count("/nodes/pve1/status") >= 1
    resp = await labs.http.get("/stats/node/home:store?stream=0", headers=auth())
    assert resp.status == 200
    assert (await resp.json(content_type=None))["node"] == "pve2"
    await assert_ambiguous(await labs.http.get("/stats/node/pve1?stream=0", headers=auth()))
    await assert_ambiguous(await labs.http.get("/stats/node/hv1?stream=0", headers=auth()))
    resp = await labs.http.get("/stats/node/nowhere:pve1?stream=0", headers=auth())
    assert resp.status == 404


async def test_node_journal_by_cluster_node(labs: Stack) -> None:
    resp = await labs.http.get("/journal/home:hv1?follow=0&limit=2", headers=auth())
    assert resp.status == 200, await resp.text()
    assert len((await resp.text()).splitlines()) == 2
    assert labs.home.api.count("/nodes/pve1/journal") >= 1
    assert labs.away.api.count("/nodes/pve1/journal") == 0
    await assert_ambiguous(await labs.http.get("/journal/pve1?follow=0", headers=auth()))


async def test_node_tail_by_cluster_node(labs: Stack) -> None:
    path = "?file=/etc/hostname&follow=0&limit=1"
    resp = await labs.http.get(f"/tail/away:pve1{path}", headers=auth(OPS))
    assert await status_and_body(resp) == (200, "pve1\n")
    assert labs.away.consoles.sessions_opened == 1
    assert labs.home.consoles.sessions_opened == 0
    await assert_ambiguous(await labs.http.get(f"/tail/pve1{path}", headers=auth(OPS)))


async def test_guest_commands_by_cluster_node(labs: Stack) -> None:
    argv = {"argv": ["hostname"]}
    resp = await labs.http.post(f"/exec/away:pve1/{BOTH}", json=argv, headers=auth(OPS))
    assert await status_and_body(resp) == (200, "away-ct\n[exit status 0]\n")
    resp = await labs.http.post(f"/exec/home:hv1/{BOTH}", json=argv, headers=auth(OPS))
    assert await status_and_body(resp) == (200, "home-ct\n[exit status 0]\n")
    # A bare node in both clusters with the vmid in both: the guests are the candidates.
    resp = await labs.http.post(f"/exec/pve1/{BOTH}", json=argv, headers=auth(OPS))
    assert resp.status == 409
    refs = {c["ref"] for c in (await resp.json(content_type=None))["candidates"]}
    assert refs == {f"home:{BOTH}", f"away:{BOTH}"}
    # ... but a vmid only one of them has is no ambiguity.
    resp = await labs.http.post(f"/exec/pve1/{HOME_ONLY}", json=argv, headers=auth(OPS))
    assert await status_and_body(resp) == (200, "home-two\n[exit status 0]\n")
    resp = await labs.http.get(
        f"/tail/home:pve1/{BOTH}?file=/etc/hostname&follow=0", headers=auth(OPS)
    )
    assert await status_and_body(resp) == (200, "home-ct\n")
    resp = await labs.http.get(f"/journal/away:pve1/{BOTH}?follow=0&limit=1", headers=auth(OPS))
    status, body = await status_and_body(resp)  # the whole body: the audit is written by then
    assert status == 200, body
    assert (labs.audit.records[-1].action, labs.audit.records[-1].guest) == (
        "journal",
        f"away:{BOTH}",
    )
    resp = await labs.http.post(f"/exec/away:pve1/{HOME_ONLY}", json=argv, headers=auth(OPS))
    assert resp.status == 404


# ---------------------------------------------------------------------------- node exec


async def test_node_exec_runs_on_the_node_and_is_audited(labs: Stack) -> None:
    resp = await labs.http.post(
        "/exec/home:pve2", json={"argv": ["cat", "/etc/hostname"]}, headers=auth()
    )
    assert await status_and_body(resp) == (200, "pve2\n[exit status 0]\n")
    runs = [r.argv for r in labs.home.shell_commands]
    assert ("cat", "/etc/hostname") in runs
    record = labs.audit.records[-1]
    assert (record.token, record.action, record.guest) == ("node-ops", "exec", "home:node/pve2")
    assert record.detail["argv"] == ["cat", "/etc/hostname"]
    assert record.result == "exit 0"
    resp = await labs.http.post(
        "/exec/store?format=json", json={"argv": ["sh", "-c", "exit 3"]}, headers=auth()
    )
    assert resp.status == 200
    assert '"exit_status":3' in await resp.text()
    await assert_ambiguous(
        await labs.http.post("/exec/pve1", json={"argv": ["true"]}, headers=auth())
    )


async def test_node_exec_needs_the_node_exec_scope(labs: Stack) -> None:
    before = labs.sessions()
    resp = await labs.http.post(
        "/exec/home:pve1", json={"argv": ["cat", "/etc/hostname"]}, headers=auth(OPS)
    )
    assert resp.status == 403
    assert "node-exec" in (await resp.json(content_type=None))["detail"]
    record = labs.audit.records[-1]
    assert (record.token, record.action, record.guest) == ("ops", "exec", "home:node/pve1")
    assert record.result.startswith("denied:")
    assert "node-exec" in record.result
    assert labs.sessions() == before  # nothing reached Proxmox


async def test_node_exec_validation_is_refused_and_audited(labs: Stack) -> None:
    before = labs.sessions()
    resp = await labs.http.post(
        "/exec/home:pve1", json={"argv": ["echo", "a\nreboot"]}, headers=auth()
    )
    assert resp.status == 400
    record = labs.audit.records[-1]
    assert record.guest == "home:node/pve1"
    assert record.result.startswith("rejected:")
    assert labs.sessions() == before


# ---------------------------------------------------------------------------- stats text


async def test_node_stats_text_carries_the_cpu_model(labs: Stack) -> None:
    resp = await labs.http.get("/stats/node/home:pve1?stream=0&format=text", headers=auth())
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    (line,) = (await resp.text()).splitlines()
    fields = line.split("|")
    assert fields[0] == "online"
    # The guest line's first four fields, in the same format.
    assert LINE_RE.match("|".join([*fields[:4], "0B/0B", "0B/0B"])), line
    assert fields[-1] == f"{labs.home.cluster.nodes['pve1'].maxcpu} x {MODEL}"
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d", fields[5]), line  # load 1 5 15
    assert re.fullmatch(r"[\d.]+[KMGT]?i?B/[\d.]+[KMGT]?i?B", fields[4]), line  # rootfs
    resp = await labs.http.get("/stats/node/home:pve1?format=xml", headers=auth())
    assert resp.status == 400
