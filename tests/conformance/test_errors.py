"""PVE's error answers become typed errors; faults from fakepve are survived or reported."""

from __future__ import annotations

import pytest

from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import (
    PveConnectionError,
    PveNodeUnreachableError,
    PveNotFoundError,
    PveParameterError,
    PvePermissionError,
    PveServerError,
)

from ..fakes import TestPve
from ..support import Pki, cluster_config, token_config


async def test_permission_error_names_privilege(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="stopped")
    pve.grant("pxproxy@pve", "/vms", "VM.Audit")  # audit only, no power
    async with PveClient(token_config(pve, pki)) as client:
        with pytest.raises(PvePermissionError) as info:
            await client.guest_action("lxc", "pve1", 101, "start")
    assert info.value.status == 403
    assert info.value.privilege == "VM.PowerMgmt"
    assert info.value.acl_path == "/vms/101"


async def test_resources_filtered_by_audit_permission(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    pve.add_ct(102, "secret", status="running")
    pve.grant("pxproxy@pve", "/vms/101", "VM.Audit")
    async with PveClient(token_config(pve, pki)) as client:
        body = await client.cluster_resources_raw()
    assert b"lxc/101" in body
    assert b"lxc/102" not in body


async def test_injected_403(pve: TestPve, pki: Pki) -> None:
    pve.fail("GET", "/cluster/status", 403, "Permission check failed (/, Sys.Audit)")
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PvePermissionError) as info:
            await client.cluster_status()
    assert info.value.privilege == "Sys.Audit"
    assert "Sys.Audit" in str(info.value)


async def test_node_offline_is_595(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running", node="pve2")
    pve.set_node_offline("pve2")
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PveNodeUnreachableError) as info:
            await client.lxc_interfaces("pve2", 101)
    assert info.value.status == 595


async def test_already_running_is_server_error_with_message(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PveServerError, match="CT 101 already running"):
            await client.guest_action("lxc", "pve1", 101, "start")


async def test_missing_guest_is_not_found(pve: TestPve, pki: Pki) -> None:
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PveNotFoundError):
            await client.guest_config("qemu", "pve1", 999)


async def test_parameter_error_keeps_fields(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PveParameterError) as info:
            await client.post("/nodes/pve1/lxc/101/status/shutdown", {"timeout": "soon"})
    assert "timeout" in info.value.errors
    assert info.value.status == 400


async def test_failed_task_reports_exit_status(pve: TestPve, pki: Pki) -> None:
    ct = pve.add_ct(101, "wiki", status="stopped")
    ct.start_error = "startup for container '101' failed"
    async with PveClient(cluster_config(pve, pki)) as client:
        upid = await client.guest_action("lxc", "pve1", 101, "start")
        status = await client.wait_task(upid, timeout_s=5)
    assert not status.ok
    assert status.exitstatus is not None
    assert "failed" in status.exitstatus


async def test_flaky_network_gets_retried_or_typed(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    pve.flaky_network(drop_rate=0.4, seed=7)
    ok = failed = 0
    async with PveClient(cluster_config(pve, pki)) as client:
        for _ in range(30):
            try:
                await client.cluster_resources_raw()
                ok += 1
            except PveConnectionError:
                failed += 1
    assert ok + failed == 30
    # One retry per GET: the success rate is far above the raw 60 %.
    assert ok >= 20


async def test_unreachable_endpoint_is_connection_error(pki: Pki) -> None:
    from pxproxy.config.models import ClusterConfig

    cfg = ClusterConfig.model_validate(
        {
            "url": "https://127.0.0.1:9",
            "token_id": "a@pve!b",
            "secret": "x",
            "tls": {"fingerprint": pki.fingerprint},
            "timeout": "2s",
        }
    )
    async with PveClient(cfg) as client:
        with pytest.raises(PveConnectionError, match=r"cannot reach https://127\.0\.0\.1:9"):
            await client.version()
