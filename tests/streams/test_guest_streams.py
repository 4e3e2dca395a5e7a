"""/exec, /journal/{node}/{vmid} and /tail against the lab: output, exit status, timeouts,
disconnects, scopes, audit, the QEMU agent path and the token-only 501."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers.guest_streams import STREAMS, guest_streams_setup
from pxproxy.config.loader import parse_config
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.lab.consoles import LabShellHost
from pxproxy.lab.server import LabServer
from pxproxy.lab.shell import StaticFile
from pxproxy.metrics import Metrics
from pxproxy.pve.client import PveClient
from pxproxy.pve.termproxy import SHELL_TICKET_NEEDED
from pxproxy.streams.shell_runner import ShellRunner, StreamSettings

from ..builders import make_guest, make_node
from ..support import wait_for

OPS = "ops-exec-token-0123456789"
READER = "reader-token-0123456789"
LIMITED = "wiki-only-token-0123456789"
LOGS = "nginx-logs-token-0123456789"
NODE = "pve1"
LXC, STOPPED, QEMU = 101, 102, 103


def auth(secret: str = OPS) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def add_guests(lab: LabServer) -> None:
    lab.cluster.add_guest(LXC, "lxc", "wiki", NODE, status="running")
    lab.cluster.add_guest(STOPPED, "lxc", "db", NODE)
    lab.cluster.add_guest(QEMU, "qemu", "vm", NODE, status="running", agent=True)


@dataclass
class Stack:
    http: TestClient[Any, Any]
    lab: LabServer
    runner: ShellRunner
    audit: Any

    def mark(self) -> tuple[int, int]:
        """What the lab has seen so far: commands run, terminal sessions opened."""
        return len(self.lab.shell_commands), self.lab.consoles.sessions_opened


@contextlib.asynccontextmanager
async def api_stack(
    lab: LabServer, *, token_only: bool = False, settings: StreamSettings | None = None
) -> AsyncIterator[Stack]:
    creds = (
        f"token_id: '{lab.credentials.token_id}', secret: '{lab.credentials.token_secret}'"
        if token_only
        else f"username: root@pam, password: '{lab.credentials.root_password}'"
    )
    text = textwrap.dedent(
        f"""
        proxmox:
          - {{name: lab, url: "{lab.url}", {creds}, tls: {{fingerprint: "{lab.fingerprint}"}}}}
        api:
          tokens:
            - {{name: ops, secret: {OPS}, scopes: [read, exec]}}
            - {{name: reader, secret: {READER}, scopes: [read]}}
            - {{name: limited, secret: {LIMITED}, scopes: [exec], guests: [wiki]}}
            - {{name: logs, secret: {LOGS}, scopes: [exec], paths: [/var/log/nginx/]}}
        """
    )
    config = parse_config(text, env={})
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build(
            "lab",
            [
                make_guest(LXC, "wiki", cluster="lab", node=NODE),
                make_guest(STOPPED, "db", cluster="lab", node=NODE, status="stopped"),
                make_guest(QEMU, "vm", cluster="lab", node=NODE, kind="qemu"),
            ],
            [make_node(NODE, cluster="lab")],
        )
    )
    client = PveClient(config.proxmox[0])
    ctx = make_context(config, inventory, Metrics(), True, clients={"lab": client})
    settings = settings or StreamSettings(exec_timeout_s=10.0, snapshot_timeout_s=10.0)
    app = build_app(ctx, setup=[guest_streams_setup(settings)])
    http = TestClient(TestServer(app))
    await http.start_server()
    try:
        yield Stack(http, lab, app[STREAMS], ctx.audit)
    finally:
        await http.close()
        await client.close()


async def run_exec(
    stack: Stack, argv: Any, *, vmid: int = LXC, fmt: str = "", **body: Any
) -> tuple[int, str]:
    query = f"?format={fmt}" if fmt else ""
    async with asyncio.timeout(20):
        resp = await stack.http.post(
            f"/exec/{NODE}/{vmid}{query}", json={"argv": argv, **body}, headers=auth()
        )
        return resp.status, await resp.text()


async def get_text(stack: Stack, path: str, token: str = OPS) -> tuple[int, str]:
    async with asyncio.timeout(20):
        resp = await stack.http.get(path, headers=auth(token))
        return resp.status, await resp.text()


@pytest.fixture
async def stack(lab_server: LabServer) -> AsyncIterator[Stack]:
    add_guests(lab_server)
    async with api_stack(lab_server) as s:
        yield s


# ------------------------------------------------------------------------------------ exec


async def test_exec_output_is_exact_and_exit_zero(stack: Stack) -> None:
    status, body = await run_exec(stack, ["printf", "%s\\n", "hello", "two words"])
    assert status == 200, body
    assert body == "hello\ntwo words\n[exit status 0]\n"
    guest_runs = [r.argv for r in stack.lab.shell_commands if r.scope == f"guest:{LXC}"]
    assert guest_runs == [("printf", "%s\\n", "hello", "two words")]
    assert stack.lab.consoles.open_sessions == 0 or await _closed(stack)


async def _closed(stack: Stack) -> bool:
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "shells to close")
    return True


async def test_exec_non_zero_exit_status(stack: Stack) -> None:
    assert await run_exec(stack, ["false"]) == (200, "[exit status 1]\n")
    assert await run_exec(stack, ["sh", "-c", "exit 3"]) == (200, "[exit status 3]\n")
    status, body = await run_exec(stack, ["no-such-program"])
    assert status == 200
    assert body.endswith("[exit status 255]\n")
    assert 'Failed to exec "no-such-program"' in body


async def test_output_without_final_newline_gets_status_on_its_own_line(stack: Stack) -> None:
    assert await run_exec(stack, ["printf", "abc"]) == (200, "abc\n[exit status 0]\n")


async def test_output_that_looks_like_markers_is_kept(stack: Stack) -> None:
    tricky = ["PXS_0123", "PXE_0123_0", "PXE_", "[exit status 9]", "PXS PXE"]
    status, body = await run_exec(stack, ["printf", "%s\\n", *tricky])
    assert status == 200
    assert body == "".join(t + "\n" for t in tricky) + "[exit status 0]\n"


async def test_output_split_across_many_frames(stack: Stack) -> None:
    # Every printf in the script is its own pty write, so its own websocket frame.
    script = "; ".join(f"printf '%s\\n' line-{i:03d}" for i in range(250))
    status, body = await run_exec(stack, ["sh", "-c", script])
    assert status == 200
    assert body == "".join(f"line-{i:03d}\n" for i in range(250)) + "[exit status 0]\n"


async def test_exec_ndjson(stack: Stack) -> None:
    status, body = await run_exec(stack, ["printf", "%s\\n", "x", "y"], fmt="json")
    assert status == 200
    lines = [json.loads(line) for line in body.splitlines()]
    assert "".join(obj["output"] for obj in lines[:-1]) == "x\ny\n"
    assert lines[-1]["exit_status"] == 0
    assert lines[-1]["duration_s"] >= 0


async def test_timeout_interrupts_and_closes_the_shell(stack: Stack) -> None:
    started = asyncio.get_running_loop().time()
    status, body = await run_exec(stack, ["sleep", "30"], timeout=0.5)
    assert status == 504, body
    assert "did not finish within 0.5s" in json.loads(body)["detail"]
    assert asyncio.get_running_loop().time() - started < 5
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "the shell to close")
    assert stack.audit.records[-1].result == "timeout"


async def test_timeout_after_output_is_reported_in_the_stream(stack: Stack) -> None:
    status, body = await run_exec(stack, ["sh", "-c", "printf early; sleep 30"], timeout=0.5)
    assert status == 200
    assert body.startswith("early\n[error: the command did not finish within 0.5s")
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "the shell to close")


async def test_client_disconnect_mid_command_closes_the_shell(stack: Stack) -> None:
    url = stack.http.make_url(f"/exec/{NODE}/{LXC}")
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.post(url, json={"argv": ["sleep", "30"]}, headers=auth())
        )
        await wait_for(lambda: stack.lab.consoles.open_sessions == 1, 5, "the shell to open")
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "the shell to close")
    await wait_for(lambda: bool(stack.audit.records), 5, "the audit record")
    assert stack.audit.records[-1].result in ("client disconnected", "cancelled")


async def test_client_disconnect_during_follow_closes_the_shell(stack: Stack) -> None:
    url = stack.http.make_url(f"/tail/{NODE}/{LXC}?file=/var/log/syslog&limit=2")
    async with aiohttp.ClientSession() as session, session.get(url, headers=auth()) as resp:
        assert resp.status == 200
        async with asyncio.timeout(5):
            first = await resp.content.readline()
        assert first.strip()
        assert stack.lab.consoles.open_sessions == 1
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "the shell to close")


async def test_exec_audit_record(stack: Stack) -> None:
    await run_exec(stack, ["sh", "-c", "exit 4"])
    record = stack.audit.records[-1]
    assert (record.token, record.action, record.guest) == ("ops", "exec", f"lab:{LXC}")
    assert record.detail["argv"] == ["sh", "-c", "exit 4"]
    assert record.result == "exit 4"
    assert record.duration_s >= 0


async def test_scopes_and_allowlist(stack: Stack) -> None:
    before = stack.mark()
    resp = await stack.http.post(
        f"/exec/{NODE}/{LXC}", json={"argv": ["true"]}, headers=auth(READER)
    )
    assert resp.status == 403
    resp = await stack.http.post(
        f"/exec/{NODE}/{QEMU}", json={"argv": ["true"]}, headers=auth(LIMITED)
    )
    assert resp.status == 403
    assert "may not act on guest" in (await resp.json(content_type=None))["detail"]
    status, _ = await get_text(stack, f"/tail/{NODE}?file=/var/log/syslog", LIMITED)
    assert status == 403
    assert stack.mark() == before
    status, _ = await get_text(stack, f"/exec/{NODE}/{LXC}")  # GET is not allowed
    assert status == 405


async def test_stopped_or_unknown_guest(stack: Stack) -> None:
    before = stack.mark()
    status, body = await run_exec(stack, ["true"], vmid=STOPPED)
    assert status == 409
    assert "not running" in body
    status, _ = await run_exec(stack, ["true"], vmid=999)
    assert status == 404
    assert stack.mark() == before


async def test_offline_node_is_503_with_retry_after(stack: Stack) -> None:
    """The one error table: an unreachable node answers 503 here as in the power endpoint
    (this endpoint said 502 before the table)."""
    stack.lab.cluster.set_node_online(NODE, False)
    async with asyncio.timeout(20):
        resp = await stack.http.post(f"/exec/{NODE}/{LXC}", json={"argv": ["true"]}, headers=auth())
        body = await resp.json()
    assert (resp.status, body["status"], body["title"]) == (503, 503, "Service Unavailable")
    assert resp.headers["Retry-After"] == "5"
    assert "offline or unreachable" in body["detail"]


async def test_token_only_config_answers_501(lab_server: LabServer) -> None:
    add_guests(lab_server)
    async with api_stack(lab_server, token_only=True) as stack:
        status, body = await run_exec(stack, ["true"])
        assert status == 501
        assert json.loads(body)["detail"] == SHELL_TICKET_NEEDED
        status, body = await get_text(stack, f"/journal/{NODE}/{LXC}")
        assert status == 501
        status, body = await get_text(stack, f"/tail/{NODE}?file=/var/log/syslog")
        assert status == 501
        assert lab_server.consoles.sessions_opened == 0


async def test_burst_is_limited_to_the_pool_size(lab_server: LabServer) -> None:
    add_guests(lab_server)
    settings = StreamSettings(max_shells=2, exec_timeout_s=10.0)
    async with api_stack(lab_server, settings=settings) as stack:
        results = await asyncio.gather(*(run_exec(stack, ["sleep", "0.2"]) for _ in range(6)))
        assert all(r == (200, "[exit status 0]\n") for r in results)
        assert stack.runner.pools["lab"].peak == 2
        assert lab_server.consoles.sessions_opened == 6


# ------------------------------------------------------------------------------------ qemu


async def test_qemu_exec_goes_through_the_agent(stack: Stack) -> None:
    sessions = stack.lab.consoles.sessions_opened
    status, body = await run_exec(stack, ["printf", "%s\\n", "from the agent"], vmid=QEMU)
    assert status == 200
    assert body == "from the agent\n[exit status 0]\n"
    assert await run_exec(stack, ["false"], vmid=QEMU) == (200, "[exit status 1]\n")
    assert stack.lab.consoles.sessions_opened == sessions  # no shell at all
    runs = [r.argv for r in stack.lab.shell_commands if r.scope == f"guest:{QEMU}"]
    assert runs == [("printf", "%s\\n", "from the agent"), ("false",)]
    assert stack.audit.records[-1].detail["via"] == "agent"


async def test_qemu_journal_snapshot_via_agent(stack: Stack) -> None:
    stack.lab.journals.guest(QEMU).append("pxtest", "qemu-journal-line")  # type: ignore[union-attr]
    status, body = await get_text(stack, f"/journal/{NODE}/{QEMU}?follow=0&limit=5")
    assert status == 200
    assert body.rstrip("\n").splitlines()[-1].endswith("qemu-journal-line")
    status, body = await get_text(stack, f"/journal/{NODE}/{QEMU}")  # follow needs a shell
    assert status == 400


# --------------------------------------------------------------------------- journal, tail


async def test_journal_snapshot_in_a_container(stack: Stack) -> None:
    status, body = await get_text(stack, f"/journal/{NODE}/{LXC}?follow=0&limit=3")
    assert status == 200
    lines = body.splitlines()
    assert len(lines) == 3
    assert all(" wiki " in line for line in lines)
    runs = [r.argv for r in stack.lab.shell_commands if r.scope == f"guest:{LXC}"]
    assert runs == [("journalctl", "--no-pager", "-o", "short", "-n", "3")]


async def test_journal_follow_delivers_new_lines(stack: Stack) -> None:
    url = stack.http.make_url(f"/journal/{NODE}/{LXC}?limit=2&service=pxtest")
    journal = stack.lab.journals.guest(LXC)
    assert journal is not None
    async with aiohttp.ClientSession() as session, session.get(url, headers=auth()) as resp:
        assert resp.status == 200
        await wait_for(lambda: stack.lab.consoles.open_sessions == 1, 5, "the shell")
        seen = b""
        async with asyncio.timeout(10):
            for i in range(3):
                await asyncio.sleep(0.05)
                journal.append("pxtest", f"fresh-{i}")
                while f"fresh-{i}".encode() not in seen:
                    seen += await resp.content.readline()
    assert [line for line in seen.decode().splitlines() if "fresh-" in line][-1].endswith("fresh-2")
    await wait_for(lambda: stack.lab.consoles.open_sessions == 0, 5, "the shell to close")
    argv = [r.argv for r in stack.lab.shell_commands if r.scope == f"guest:{LXC}"]
    assert argv == [("journalctl", "--no-pager", "-o", "short", "-n", "2", "-u", "pxtest", "-f")]


async def test_journal_falls_back_to_syslog_files(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A container without journald: journalctl finds nothing, /var/log/messages exists.
    scope = f"guest:{LXC}"
    original = LabShellHost.journal

    def journal(self: LabShellHost, which: str) -> Any:
        return None if which == scope else original(self, which)

    def files(self: LabShellHost, which: str) -> dict[str, StaticFile]:
        return {"/var/log/messages": StaticFile("old\nmsg-1\nmsg-2\n")} if which == scope else {}

    monkeypatch.setattr(LabShellHost, "journal", journal)
    monkeypatch.setattr(LabShellHost, "files", files, raising=False)
    status, body = await get_text(stack, f"/journal/{NODE}/{LXC}?follow=0&limit=2")
    assert status == 200
    assert body.startswith("msg-1\nmsg-2\n")
    assert "No journal files" not in body
    runs = [r.argv for r in stack.lab.shell_commands if r.scope == scope]
    assert runs[-1] == ("tail", "-n", "2", "-q", "--", "/var/log/messages", "/var/log/syslog")
    assert stack.audit.records[-1].detail["fallback"]


async def test_tail_of_a_missing_file_reports_it(stack: Stack) -> None:
    status, body = await get_text(stack, f"/tail/{NODE}/{LXC}?file=/var/log/nope.log&follow=0")
    assert status == 200
    assert "tail: cannot open '/var/log/nope.log' for reading: No such file or directory" in body
    assert body.endswith("[exit status 1]\n")


async def test_tail_several_files_in_a_container(stack: Stack) -> None:
    status, body = await get_text(
        stack, f"/tail/{NODE}/{LXC}?file=/etc/hostname&file=/etc/debian_version&follow=0"
    )
    assert status == 200
    assert "==> /etc/hostname <==\nwiki\n" in body
    assert "==> /etc/debian_version <==\n13.1\n" in body


async def test_tail_on_the_node(stack: Stack) -> None:
    status, body = await get_text(stack, f"/tail/{NODE}?file=/etc/hostname&follow=0&limit=1")
    assert (status, body) == (200, f"{NODE}\n")
    node_runs = [r.argv for r in stack.lab.shell_commands if r.argv[0] == "tail"]
    assert node_runs == [("tail", "-n", "1", "--", "/etc/hostname")]
    status, _ = await get_text(stack, "/tail/nowhere?file=/etc/hostname")
    assert status == 404


async def test_token_path_allowlist_limits_tail(stack: Stack) -> None:
    before = stack.mark()
    status, text = await get_text(
        stack, f"/tail/{NODE}/{LXC}?file=/etc/shadow&follow=0", token=LOGS
    )
    assert status == 400
    assert "/var/log/nginx/" in text
    assert stack.mark() == before  # nothing reached the lab
    status, text = await get_text(
        stack, f"/tail/{NODE}/{LXC}?file=/var/log/nginx/access.log&follow=0&limit=2", token=LOGS
    )
    assert status == 200, text
    assert len([line for line in text.splitlines() if line.strip()]) == 2


@pytest.mark.parametrize("vmid", ["1" * 5000, "١٠١"])
async def test_hostile_vmids_are_not_found_not_crashes(stack: Stack, vmid: str) -> None:
    before = stack.mark()
    async with asyncio.timeout(20):
        resp = await stack.http.post(
            f"/exec/{NODE}/{vmid}", json={"argv": ["true"]}, headers=auth()
        )
    assert resp.status == 404
    assert stack.mark() == before
