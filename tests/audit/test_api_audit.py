"""The audit file of a daemon against the lab: power actions, exec and every kind of refusal
are chained lines that `pxproxy audit verify` accepts, across a logrotate-style rotation."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxproxy.config.loader import ConfigError
from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for
from .chains import read_lines

OPS = "audit-ops-secret-0123"
READER = "audit-reader-secret-0123"
POWER_ONLY = "audit-power-only-secret-0123"
NARROW = "audit-narrow-secret-0123"
VM, CT = 940, 941


@pytest.fixture
async def session(lab_server: LabServer, tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    lab_server.cluster.add_guest(VM, "qemu", "auditvm", "pve1", status="running", agent=True)
    lab_server.cluster.add_guest(CT, "lxc", "auditct", "pve1", boot_time_s=0.05, static_ip=True)
    await lab_server.cluster.open()
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "audit": {"path": str(tmp_path / "audit.jsonl")},
            "api": {
                "tokens": [
                    {"name": "ops", "secret": OPS, "scopes": ["read", "power", "exec"]},
                    {"name": "reader", "secret": READER, "scopes": ["read"]},
                    {"name": "power-only", "secret": POWER_ONLY, "scopes": ["power"]},
                    {"name": "narrow", "secret": NARROW, "scopes": ["exec"], "guests": ["web*"]},
                ]
            },
        }
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{daemon.api_port}", timeout=aiohttp.ClientTimeout(total=30)
        ) as http:

            async def polled() -> bool:
                status, guests = await call(http, "GET", "/api/v1/guests")
                return status == 200 and len(guests) == 2

            await wait_for(polled, 10, "the first poll")
            yield http
    finally:
        await daemon.stop()


async def call(
    http: aiohttp.ClientSession, method: str, path: str, token: str = OPS, **kwargs: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, path, headers=headers, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxproxy", "audit", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


async def test_actions_and_refusals_make_a_chain_that_verifies(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    status, body = await call(session, "POST", f"/api/v1/guests/{CT}/start?wait=1")
    assert status == 200, body
    status, body = await call(session, "POST", f"/exec/pve1/{VM}", json={"argv": ["echo", "hi"]})
    assert (status, body) == (200, "hi\n[exit status 0]\n")
    # A refusal of each kind: a missing scope (power, exec, read), a guest outside the
    # allowlist, input refused (a stream's and a power action's).
    refusals: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", f"/api/v1/guests/{CT}/stop", READER, {}),
        ("POST", f"/exec/pve1/{VM}", POWER_ONLY, {"json": {"argv": ["id"]}}),
        ("GET", "/api/v1/guests", POWER_ONLY, {}),
        ("POST", f"/exec/pve1/{VM}", NARROW, {"json": {"argv": ["id"]}}),
        ("POST", f"/exec/pve1/{VM}", OPS, {"json": {"argv": "id"}}),
        ("POST", f"/api/v1/guests/{CT}/stop?timeout=forever", OPS, {}),
    ]
    for method, target, token, kwargs in refusals:
        status, body = await call(session, method, target, token, **kwargs)
        assert status in (400, 403), (target, status, body)

    lines = records(path)
    assert [(r["token"], r["action"], r["guest"], r["result"].split(":")[0]) for r in lines] == [
        ("ops", "start", f"lab:{CT}", "ok"),
        ("ops", "exec", f"lab:{VM}", "exit 0"),
        ("reader", "stop", str(CT), "denied"),
        ("power-only", "exec", f"pve1/{VM}", "denied"),
        ("power-only", "read", "", "denied"),
        ("narrow", "exec", f"lab:{VM}", "denied"),
        ("ops", "exec", f"lab:{VM}", "rejected"),
        ("ops", "stop", str(CT), "rejected"),
    ]
    assert "lacks the 'power' scope" in lines[2]["result"]
    assert lines[2]["detail"] == {
        "method": "POST",
        "path": f"/api/v1/guests/{CT}/stop",
        "scope": "power",
    }
    assert "lacks the 'exec' scope" in lines[3]["result"]
    assert "lacks the 'read' scope" in lines[4]["result"]
    assert [r["seq"] for r in lines] == list(range(1, 9))

    done = verify(path)
    assert done.returncode == 0, done.stderr
    assert "8 lines, chain intact (a new chain)" in done.stdout


async def test_the_chain_continues_across_a_rotation(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    assert (await call(session, "POST", f"/api/v1/guests/{CT}/start?wait=1"))[0] == 200
    # logrotate with `create`: the file is renamed and a new empty one takes its name.
    path.rename(rotated)
    path.touch(mode=0o600)
    assert (await call(session, "POST", f"/api/v1/guests/{CT}/stop?wait=1"))[0] == 200
    assert (await call(session, "POST", f"/api/v1/guests/{CT}/stop", READER))[0] == 403
    assert [r["action"] for r in records(rotated)] == ["start"]
    assert [(r["seq"], r["action"]) for r in records(path)] == [(2, "stop"), (3, "stop")]
    done = verify(rotated, path)
    assert done.returncode == 0, done.stderr
    assert "2 files: 3 lines, chain intact" in done.stdout
    # Tampering with the rotated file breaks the chain at the newer one's first line.
    lines = read_lines(rotated)
    rotated.write_bytes(lines[0].replace(b'"token":"ops"', b'"token":"eve"') + b"\n")
    done = verify(rotated, path)
    assert done.returncode == 1
    assert f"{path}:1: prev is not the hash of the last line of {rotated}" in done.stderr


async def test_an_audit_file_that_cannot_be_opened_stops_the_start(
    lab_server: LabServer, tmp_path: Path
) -> None:
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "audit": {"path": str(tmp_path / "nowhere" / "audit.jsonl")},
        }
    )
    daemon = Daemon(config)
    try:
        with pytest.raises(ConfigError, match=r"^audit\.path: cannot open .*nowhere"):
            await daemon.start()
        assert daemon.api_port is None  # refused before the API listened
    finally:
        await daemon.stop()
