"""The lab's node shell through the real termproxy protocol, and the node journal API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import aiohttp
import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import PvePermissionError, PveServerError
from pxproxy.pve.termproxy_frames import encode_auth, encode_input, encode_resize

from ..support import wait_for


def root_client(server: LabServer) -> PveClient:
    return PveClient(
        ClusterConfig.model_validate(
            {
                "url": server.url,
                "username": "root@pam",
                "password": server.credentials.root_password,
                "tls": {"fingerprint": server.fingerprint},
            }
        )
    )


def token_client(server: LabServer) -> PveClient:
    return PveClient(
        ClusterConfig.model_validate(
            {
                "url": server.url,
                "token_id": server.credentials.token_id,
                "secret": server.credentials.token_secret,
                "tls": {"fingerprint": server.fingerprint},
            }
        )
    )


class Terminal:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.screen = b""

    async def until(self, needle: bytes, timeout_s: float = 5.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            while needle not in self.screen:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.BINARY:
                    raise AssertionError(f"connection ended; screen so far: {self.screen!r}")
                self.screen += msg.data
        return self.screen

    async def type(self, text: str) -> None:
        await self.ws.send_bytes(encode_input(text))


@asynccontextmanager
async def terminal(
    server: LabServer, client: PveClient, *, token: bool = False
) -> AsyncIterator[Terminal]:
    opened = await client.post("/nodes/pve1/termproxy")
    if token:
        headers = {
            "Authorization": f"PVEAPIToken={server.credentials.token_id}="
            f"{server.credentials.token_secret}"
        }
    else:
        _, ticket, _ = await client.shell_credentials()
        headers = {"Cookie": f"PVEAuthCookie={ticket}"}
    url = (
        f"{server.url}/api2/json/nodes/pve1/vncwebsocket?port={opened['port']}"
        f"&vncticket={quote(opened['ticket'], safe='')}"
    )
    connector = aiohttp.TCPConnector(
        ssl=aiohttp.Fingerprint(bytes.fromhex(server.fingerprint.replace(":", "")))
    )
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(url, headers=headers, protocols=("binary",)) as ws,
    ):
        await ws.send_bytes(encode_auth(opened["user"], opened["ticket"]))
        term = Terminal(ws)
        await term.until(b"OK")
        await ws.send_bytes(encode_resize(120, 40))
        yield term


async def test_root_shell_motd_echo_and_output(lab_server: LabServer) -> None:
    async with root_client(lab_server) as client, terminal(lab_server, client) as term:
        screen = await term.until(b"root@pve1")
        assert b"Debian GNU/Linux" in screen
        await term.type("echo hello-$((1))\r")
        await term.type("printf '%s\\n' a 'b c'\r")
        screen = await term.until(b"b c\r\n")
    assert b"echo hello" in screen  # the echo of what was typed
    assert b"a\r\nb c\r\n" in screen
    lines = [r.line for r in lab_server.consoles.record]
    assert "printf '%s\\n' a 'b c'" in lines


async def test_pct_exec_runs_inside_the_guest(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(100, "lxc", "wiki", "pve1", status="running")
    lab_server.cluster.add_guest(101, "lxc", "db", "pve1")
    async with root_client(lab_server) as client, terminal(lab_server, client) as term:
        await term.until(b"# ")
        await term.type("pct exec 100 -- cat /etc/hostname; echo rc=$?\r")
        screen = await term.until(b"rc=0")
        await term.type("pct exec 101 -- true; echo rc=$?\r")
        screen = await term.until(b"rc=255")
    assert b"wiki\r\n" in screen
    assert b"CT 101 not running" in screen
    scopes = {(r.scope, r.argv) for r in lab_server.consoles.record}
    assert ("guest:100", ("cat", "/etc/hostname")) in scopes


async def test_token_gets_a_login_prompt_not_a_shell(lab_server: LabServer) -> None:
    async with token_client(lab_server) as client, terminal(lab_server, client, token=True) as term:
        await term.until(b"login:")
        await term.type("root\r")
        await term.until(b"Password:")
        await term.type("secret\r")
        screen = await term.until(b"Login incorrect")
    assert b"root@pve1" not in screen
    assert lab_server.consoles.record == []


async def test_vnc_ticket_is_single_use(lab_server: LabServer) -> None:
    async with root_client(lab_server) as client:
        opened = await client.post("/nodes/pve1/termproxy")
        assert isinstance(opened["port"], str)
        _, ticket, _ = await client.shell_credentials()
        url = (
            f"{lab_server.url}/api2/json/nodes/pve1/vncwebsocket?port={opened['port']}"
            f"&vncticket={quote(opened['ticket'], safe='')}"
        )
        fp = aiohttp.Fingerprint(bytes.fromhex(lab_server.fingerprint.replace(":", "")))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fp)) as session:
            headers = {"Cookie": f"PVEAuthCookie={ticket}"}
            async with session.ws_connect(url, headers=headers):
                pass
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                async with session.ws_connect(url, headers=headers):
                    pass
    assert info.value.status == 401


async def test_bad_frame_and_abrupt_disconnect_leave_the_lab_serving(
    lab_server: LabServer,
) -> None:
    async with root_client(lab_server) as client:
        async with terminal(lab_server, client) as term:
            await term.until(b"# ")
            await term.ws.send_bytes(b"0:99:short")  # length lies
            msg = await term.ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with terminal(lab_server, client) as term:
            await term.until(b"# ")
            await term.type("sleep 30\r")
            await term.until(b"sleep 30")
            # The client vanishes mid-command: the shell must be closed, not left running.
        await wait_for(lambda: lab_server.consoles.open_sessions == 0, 5, "sessions to close")
        async with terminal(lab_server, client) as term:
            await term.type("echo still-alive\r")
            await term.until(b"still-alive\r\n")
    assert lab_server.consoles.sessions_opened == 3


async def test_node_journal_lastentries_and_follow(lab_server: LabServer) -> None:
    async with token_client(lab_server) as client:
        lines = await client.get("/nodes/pve1/journal", {"lastentries": 5})
        assert len(lines) == 7
        assert lines[0].startswith("s=")
        assert lines[-1].startswith("s=")
        assert "pve1" in lines[1]
        lab_server.journals.node("pve1").append("pxtest", "a fresh line")
        newer = await client.get("/nodes/pve1/journal", {"startcursor": lines[-1]})
        assert [line for line in newer[1:-1] if line.endswith("a fresh line")]
        filtered = await client.get(
            "/nodes/pve1/journal", {"lastentries": 1000, "service": "pxtest"}
        )
    assert all("pxtest" in line for line in filtered[1:-1])
    assert len(filtered) == 3


async def test_journal_needs_sys_syslog_and_shell_needs_sys_console(lab_server: LabServer) -> None:
    lab_server.access.grant("pxproxy@pve", "/vms", "VM.Audit")
    async with token_client(lab_server) as client:
        with pytest.raises(PvePermissionError) as info:
            await client.get("/nodes/pve1/journal")
        assert info.value.privilege == "Sys.Syslog"
        with pytest.raises(PvePermissionError) as info:
            await client.post("/nodes/pve1/termproxy")
        assert info.value.privilege == "Sys.Console"


async def test_bad_cursor_is_an_error_not_a_crash(lab_server: LabServer) -> None:
    async with token_client(lab_server) as client:
        with pytest.raises(PveServerError, match="journalctl failed"):
            await client.get("/nodes/pve1/journal", {"startcursor": "s=nope"})
        assert len(await client.get("/nodes/pve1/journal", {"lastentries": 1})) == 3
