"""PveClient's typed calls against the lab: node status, node journal, guest status/current
(qmpstatus), agent exec, the termproxy POST. Each goes through the client's one request path,
so each is counted in `requests_sent` and its errors come from the one exception map."""

from __future__ import annotations

import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import (
    PveError,
    PveNodeUnreachableError,
    PveProtocolError,
)
from pxproxy.pve.models import (
    AgentExecStatus,
    parse_guest_status,
    parse_journal_page,
    parse_termproxy,
)

from ..support import lab_cluster, wait_for

# vmids of these tests only (the lab derives guest addresses from them).
VM = 4701
CT = 4702


def token_client(server: LabServer) -> PveClient:
    return PveClient(ClusterConfig.model_validate(lab_cluster(server)))


def root_client(server: LabServer) -> PveClient:
    password = {"username": "root@pam", "password": server.credentials.root_password}
    entry = lab_cluster(server, token_id=None, secret=None, **password)
    return PveClient(ClusterConfig.model_validate(entry))


async def test_node_status_is_typed(lab_server: LabServer) -> None:
    async with token_client(lab_server) as client:
        status = await client.node_status("pve1")
        sent = client.requests_sent
    assert status.cpus > 0
    assert status.cpu_model
    assert status.pveversion.startswith("pve-manager/")
    assert status.memory["total"] >= status.memory["used"] > 0
    assert len(status.loadavg) == 3
    assert sent == 1


async def test_node_journal_pages_follow_and_filter(lab_server: LabServer) -> None:
    await lab_server.journals.ticker.stop()  # only the lines this test writes are new
    async with token_client(lab_server) as client:
        page = await client.node_journal("pve1", lastentries=5)
        assert len(page.lines) == 5
        assert page.start_cursor.startswith("s=")
        assert page.end_cursor.startswith("s=")
        lab_server.journals.node("pve1").append("pxtest", "a fresh line")
        newer = await client.node_journal("pve1", startcursor=page.end_cursor)
        filtered = await client.node_journal("pve1", lastentries=1000, services=["pxtest"])
    assert [line for line in newer.lines if line.endswith("a fresh line")]
    # The repeated `service` parameter reached Proxmox: only that unit's lines came back.
    assert filtered.lines
    assert all("pxtest" in line for line in filtered.lines)


async def test_paused_vm_shows_in_qmpstatus_only(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(VM, "qemu", "vm", "pve1", status="running")
    lab_server.cluster.add_guest(CT, "lxc", "ct", "pve1", status="running")
    await lab_server.cluster.suspend(VM).wait()
    async with token_client(lab_server) as client:
        vm = await client.guest_status("qemu", "pve1", VM)
        ct = await client.guest_status("lxc", "pve1", CT)
    # /cluster/resources (and status) say running; qmpstatus tells the truth.
    assert (vm.status, vm.qmpstatus, vm.state, vm.paused) == ("running", "paused", "paused", True)
    assert (vm.vmid, vm.name) == (VM, "vm")
    assert (ct.status, ct.qmpstatus, ct.state, ct.paused) == ("running", None, "running", False)


async def test_agent_exec_and_exec_status(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(VM, "qemu", "game", "pve1", status="running", agent=True)
    async with token_client(lab_server) as client:
        pid = await client.agent_exec("pve1", VM, ["cat", "/etc/hostname"])
        seen: list[AgentExecStatus] = []

        async def exited() -> bool:
            seen.append(await client.agent_exec_status("pve1", VM, pid))
            return seen[-1].exited

        await wait_for(exited, 5, "the agent command to exit")
    status = seen[-1]
    assert (status.exit_status, status.out_data, status.err_data) == (0, "game\n", "")


async def test_termproxy_post_goes_through_the_client(lab_server: LabServer) -> None:
    async with root_client(lab_server) as client:
        opened = await client.termproxy("pve1")
        _, ticket, _ = await client.shell_credentials()
        sent = client.requests_sent
        # An expired ticket: one 401, a fresh login, the POST again; no error for the caller.
        lab_server.access.expire_tickets()
        again = await client.termproxy("pve1")
        resent = client.requests_sent - sent
    assert opened.user == "root@pam"
    assert opened.port.isdigit()
    assert opened.ticket
    assert opened.cookie == ticket  # the websocket must present the POST's own cookie
    assert again.cookie != ticket
    assert sent == 2  # login, POST: both counted by the one transport
    assert resent == 3  # refused POST, login, POST
    assert "vncwebsocket?port=" in client.websocket_url("pve1", opened.port, opened.ticket)


async def test_termproxy_errors_come_from_the_one_exception_map(lab_server: LabServer) -> None:
    lab_server.cluster.add_node("pve2")
    lab_server.cluster.set_node_online("pve2", False)
    async with root_client(lab_server) as client:
        with pytest.raises(PveNodeUnreachableError) as info:
            await client.termproxy("pve2")
    assert info.value.status in (595, 596)


async def test_termproxy_without_a_password_is_a_typed_error(lab_server: LabServer) -> None:
    async with token_client(lab_server) as client:
        with pytest.raises(PveError, match="password"):
            await client.termproxy("pve1")
        assert client.requests_sent == 0


def test_models_reject_or_coerce_odd_answers() -> None:
    # PVE 7 numeric strings, a garbled counter, no qmpstatus at all.
    status = parse_guest_status({"status": "running", "vmid": "7", "mem": "12", "netin": "x"})
    assert (status.vmid, status.mem, status.netin, status.state) == (7, 12, 0, "running")
    assert parse_guest_status(None).status == "unknown"
    page = parse_journal_page(["a", "one\r\nline", "b"], "journal")
    assert page.lines == ("one line",)
    with pytest.raises(PveProtocolError):
        parse_journal_page(["only one cursor"], "journal")
    with pytest.raises(PveProtocolError):
        parse_termproxy({"user": "root@pam", "ticket": "t"}, "cookie", "termproxy")
    assert parse_termproxy({"user": "u", "ticket": "t", "port": 5900}, "c", "p").port == "5900"
