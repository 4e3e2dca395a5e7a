"""Power actions through the management API of a real daemon against the lab."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for

OPS = "power-ops-secret-0123"
READER = "power-reader-secret-0123"
NARROW = "power-narrow-secret-0123"


def config(lab: LabServer) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {
                "tokens": [
                    {"name": "ops", "secret": OPS, "scopes": ["read", "power"], "guests": ["*"]},
                    {"name": "reader", "secret": READER, "scopes": ["read"]},
                    # Allowed only the "web*" guests.
                    {"name": "narrow", "secret": NARROW, "scopes": ["power"], "guests": ["web*"]},
                ]
            },
        }
    )


@contextlib.asynccontextmanager
async def daemon(lab: LabServer) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    d = Daemon(config(lab))
    await d.start()
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{d.api_port}", timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            # The guests are known once the first poll has landed.
            async def polled() -> bool:
                async with session.get(
                    "/api/v1/guests", headers={"Authorization": f"Bearer {OPS}"}
                ) as resp:
                    return len(await resp.json()) == len(lab.cluster.guests)

            await wait_for(polled, 10, "the first poll")
            yield d, session
    finally:
        await d.stop()


async def post(
    session: aiohttp.ClientSession, path: str, token: str = OPS
) -> tuple[int, dict[str, Any]]:
    async with session.post(path, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json(content_type=None)


def state(lab: LabServer, vmid: int) -> str:
    return lab.cluster.guests[vmid].status


class AuditCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


@pytest.fixture
def audit() -> Iterator[AuditCapture]:
    """The audit lines as operators see them in the `pxproxy.audit` log."""
    capture = AuditCapture()
    logger = logging.getLogger("pxproxy.audit")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)


async def test_start_and_stop_with_wait(lab_server: LabServer, audit: AuditCapture) -> None:
    lab_server.cluster.add_guest(101, "lxc", "web1", "pve1", boot_time_s=0.2, static_ip=True)
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/web1/start?wait=1")
        assert status == 200, body
        assert body["exitstatus"] == "OK"
        assert body["guest"] == "lxc/101"
        assert body["action"] == "start"
        assert body["upid"].startswith("UPID:pve1:")
        assert state(lab_server, 101) == "running"

        status, body = await post(session, "/api/v1/guests/pve1/101/stop?wait=1&timeout=30s")
        assert status == 200, body
        assert body["exitstatus"] == "OK"
        assert state(lab_server, 101) == "stopped"
    assert [t.type for t in lab_server.tasks] == ["vzstart", "vzstop"]
    assert [(r["token"], r["action"], r["guest"], r["result"]) for r in audit.records] == [
        ("ops", "start", "lab:101", "ok"),
        ("ops", "stop", "lab:101", "ok"),
    ]
    assert all(r["duration_s"] >= 0 for r in audit.records)
    assert audit.records[0]["detail"]["upid"].startswith("UPID:")


async def test_without_wait_answers_202_with_the_upid(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(102, "qemu", "web2", "pve1", boot_time_s=0.3, static_ip=True)
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/102/start")
        assert status == 202, body
        assert body["upid"].startswith("UPID:pve1:")
        assert ":qmstart:102:" in body["upid"]
        assert "exitstatus" not in body
        await wait_for(lambda: lab_server.cluster.guests[102].status == "running", 10, "start")


async def test_forbidden_without_scope_or_outside_allowlist(
    lab_server: LabServer, audit: AuditCapture
) -> None:
    lab_server.cluster.add_guest(103, "lxc", "db", "pve1", static_ip=True)
    lab_server.cluster.add_guest(104, "lxc", "web4", "pve1", boot_time_s=0.05, static_ip=True)
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/db/start", READER)
        assert status == 403
        assert "lacks the 'power' scope" in body["detail"]
        status, body = await post(session, "/api/v1/guests/db/start", NARROW)
        assert status == 403
        assert "may not act on guest lab:103" in body["detail"]
        # Inside its allowlist the same token may act.
        status, body = await post(session, "/api/v1/guests/web4/start?wait=1", NARROW)
        assert status == 200, body
    assert [t.id for t in lab_server.tasks] == ["104"]
    assert lab_server.cluster.guests[103].status == "stopped"
    results = [(r["token"], r["guest"], r["result"]) for r in audit.records]
    # The scope refusal names the ref as asked for: it is refused before any lookup.
    assert results[0] == ("reader", "db", "denied: token 'reader' lacks the 'power' scope")
    assert results[1][:2] == ("narrow", "lab:103")
    assert results[1][2].startswith("denied: ")
    assert results[2] == ("narrow", "lab:104", "ok")


async def test_already_running_is_409_with_proxmox_message(
    lab_server: LabServer, audit: AuditCapture
) -> None:
    lab_server.cluster.add_guest(105, "lxc", "web5", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/105/start?wait=1")
    assert status == 409
    assert body["detail"] == "CT 105 already running"
    assert audit.records[-1]["result"] == "failed: CT 105 already running"


async def test_already_running_vm_is_409_too(lab_server: LabServer) -> None:
    # QEMU: PVE accepts the call and the task fails; the answer matches the container's.
    lab_server.cluster.add_guest(110, "qemu", "web10", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/110/start?wait=1")
    assert status == 409
    assert body["detail"] == "VM 110 already running"
    assert body["upid"].startswith("UPID:pve1:")


async def test_failed_task_is_502_with_exit_status(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(
        106, "lxc", "web6", "pve1", boot_time_s=0.05, static_ip=True, fail_start="no rootfs"
    )
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/106/start?wait=1")
    assert status == 502
    assert body["title"] == "Task Failed"
    assert "no rootfs" in body["exitstatus"]
    assert "no rootfs" in body["detail"]


async def test_missing_privilege_of_pxproxy_is_named(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(107, "lxc", "web7", "pve1", static_ip=True)
    # pxproxy's token may read everything but not manage power.
    lab_server.access.grant(lab_server.credentials.token_id, "/", "VM.Audit", "Sys.Audit")
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/107/start")
    assert status == 502
    assert body["privilege"] == "VM.PowerMgmt"
    assert "VM.PowerMgmt on /vms/107" in body["detail"]
    assert lab_server.tasks == []


async def test_offline_node_is_503(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(108, "lxc", "web8", "pve1", static_ip=True)
    async with daemon(lab_server) as (_, session):
        lab_server.set_node_offline("pve1")
        status, body = await post(session, "/api/v1/guests/108/start")
    assert status == 503
    assert "node pve1 is offline" in body["detail"]


async def test_bad_requests(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(109, "lxc", "web9", "pve1", static_ip=True)
    async with daemon(lab_server) as (_, session):
        status, body = await post(session, "/api/v1/guests/109/explode")
        assert status == 400
        assert "start, stop, shutdown, reboot, suspend, resume" in body["detail"]
        status, body = await post(session, "/api/v1/guests/109/start?wait=maybe")
        assert status == 400
        status, body = await post(session, "/api/v1/guests/109/start?wait=1&timeout=-3")
        assert status == 400
        assert "timeout" in body["detail"]
        status, body = await post(session, "/api/v1/guests/999/start")
        assert status == 404
    assert lab_server.tasks == []
