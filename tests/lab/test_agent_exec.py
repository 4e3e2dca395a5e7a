"""QEMU guest-agent exec in the lab: argv without a shell, exit codes, output, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pxproxy.lab.server import LabServer


class Api:
    def __init__(self, server: LabServer, session: aiohttp.ClientSession) -> None:
        self.server = server
        self.session = session
        creds = server.credentials
        self.headers = {"Authorization": f"PVEAPIToken={creds.token_id}={creds.token_secret}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        url = f"{self.server.url}/api2/json{path}"
        async with self.session.request(method, url, headers=self.headers, **kwargs) as resp:
            return resp.status, (await resp.json())

    async def run(self, vmid: int, argv: list[str]) -> dict[str, Any]:
        status, body = await self.call(
            "POST", f"/nodes/pve1/qemu/{vmid}/agent/exec", data=[("command", a) for a in argv]
        )
        assert status == 200, body
        pid = body["data"]["pid"]
        async with asyncio.timeout(5):
            while True:
                status, body = await self.call(
                    "GET", f"/nodes/pve1/qemu/{vmid}/agent/exec-status", params={"pid": pid}
                )
                assert status == 200, body
                if body["data"]["exited"]:
                    return dict(body["data"])
                await asyncio.sleep(0.01)


@pytest.fixture
async def api(lab_server: LabServer) -> AsyncIterator[Api]:
    lab_server.cluster.add_guest(200, "qemu", "game", "pve1", status="running", agent=True)
    lab_server.cluster.add_guest(201, "qemu", "plain", "pve1", status="running")
    fp = aiohttp.Fingerprint(bytes.fromhex(lab_server.fingerprint.replace(":", "")))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fp))
    try:
        yield Api(lab_server, session)
    finally:
        await session.close()


async def test_exec_output_and_exit_codes(api: Api) -> None:
    hostname = await api.run(200, ["cat", "/etc/hostname"])
    assert (hostname["exitcode"], hostname["out-data"]) == (0, "game\n")
    failed = await api.run(200, ["false"])
    assert failed["exitcode"] == 1
    assert "out-data" not in failed


async def test_argv_is_not_a_shell(api: Api) -> None:
    result = await api.run(200, ["echo", "a; rm -rf / && $(reboot)"])
    assert result["out-data"] == "a; rm -rf / && $(reboot)\n"
    argvs = [r.argv for r in api.server.consoles.record]
    assert argvs == [("echo", "a; rm -rf / && $(reboot)")]


async def test_agent_errors(api: Api) -> None:
    status, _ = await api.call("POST", "/nodes/pve1/qemu/201/agent/exec", data={"command": "true"})
    assert status == 500
    status, body = await api.call("POST", "/nodes/pve1/qemu/200/agent/exec", data={})
    assert status == 400
    assert "command" in body["errors"]
    status, _ = await api.call(
        "GET", "/nodes/pve1/qemu/200/agent/exec-status", params={"pid": "999999"}
    )
    assert status == 500
