"""The lab's fault knobs and its answers to malformed requests."""

from __future__ import annotations

import aiohttp
import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import PveNodeUnreachableError, PveTimeoutError


def client(server: LabServer, **extra: object) -> PveClient:
    data: dict[str, object] = {
        "url": server.url,
        "token_id": server.credentials.token_id,
        "secret": server.credentials.token_secret,
        "tls": {"fingerprint": server.fingerprint},
    }
    data.update(extra)
    return PveClient(ClusterConfig.model_validate(data))


async def test_slow_api_is_felt_by_clients(lab_server: LabServer) -> None:
    lab_server.slow_api(1.0)
    async with client(lab_server, timeout="0.2s") as pve:
        with pytest.raises(PveTimeoutError):
            await pve.version()
    lab_server.slow_api(0)
    async with client(lab_server) as pve:
        assert (await pve.version())["version"]


async def test_node_offline_and_back(lab_server: LabServer) -> None:
    lab_server.cluster.add_node("pve2")
    lab_server.cluster.add_guest(101, "lxc", "wiki", "pve2", status="running")
    lab_server.set_node_offline("pve2")
    async with client(lab_server) as pve:
        with pytest.raises(PveNodeUnreachableError):
            await pve.guest_status("lxc", "pve2", 101)
        lab_server.set_node_offline("pve2", offline=False)
        assert (await pve.guest_status("lxc", "pve2", 101)).status == "running"


async def test_inspection_records_tasks_and_history(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(101, "lxc", "wiki", "pve1", boot_time_s=0)
    lab_server.fail_start(101, "no rootfs")
    async with client(lab_server) as pve:
        failed = await pve.wait_task(await pve.guest_action("lxc", "pve1", 101, "start"), 5)
        lab_server.fail_start(101, None)
        started = await pve.wait_task(await pve.guest_action("lxc", "pve1", 101, "start"), 5)
    assert (failed.ok, started.ok) == (False, True)
    assert [t.type for t in lab_server.tasks] == ["vzstart", "vzstart"]
    assert lab_server.history(101)[-1] == "running"


@pytest.mark.parametrize(
    ("method", "path", "status", "needle"),
    [
        ("GET", "/nodes/pve1/lxc/abc/status/current", 400, "vmid"),
        ("GET", "/nodes/pve1/lxc/999/status/current", 500, "does not exist"),
        ("GET", "/nodes/nowhere/status", 500, "hostname lookup"),
        ("POST", "/nodes/pve1/lxc/101/status/explode", 501, "not implemented"),
        ("GET", "/cluster/resources?type=bogus", 400, "type"),
        ("GET", "/nodes/pve1/tasks/UPID:junk/status", 400, "upid"),
        ("GET", "/no/such/path", 501, "not implemented"),
    ],
)
async def test_malformed_requests_get_pve_errors(
    lab_server: LabServer, method: str, path: str, status: int, needle: str
) -> None:
    lab_server.cluster.add_guest(101, "lxc", "wiki", "pve1")
    creds = lab_server.credentials
    headers = {"Authorization": f"PVEAPIToken={creds.token_id}={creds.token_secret}"}
    fp = aiohttp.Fingerprint(bytes.fromhex(lab_server.fingerprint.replace(":", "")))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fp)) as session,
        session.request(method, lab_server.url + "/api2/json" + path, headers=headers) as resp,
    ):
        body = await resp.json()
    assert resp.status == status
    assert needle in (body.get("message", "") + str(body.get("errors", "")))
    assert body["data"] is None


async def test_malformed_json_body(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(101, "lxc", "wiki", "pve1", status="running")
    creds = lab_server.credentials
    headers = {
        "Authorization": f"PVEAPIToken={creds.token_id}={creds.token_secret}",
        "Content-Type": "application/json",
    }
    fp = aiohttp.Fingerprint(bytes.fromhex(lab_server.fingerprint.replace(":", "")))
    url = lab_server.url + "/api2/json/nodes/pve1/lxc/101/status/shutdown"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fp)) as session,
        session.post(url, headers=headers, data=b"{not json") as resp,
    ):
        body = await resp.json()
    assert resp.status == 400
    assert "body" in body["errors"]
    assert lab_server.cluster.guests[101].status == "running"  # nothing happened
