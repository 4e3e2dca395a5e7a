"""The daemon as users run it: a subprocess with a config file, against fakepve."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from ..fakes import TestPve
from ..support import Pki, wait_for
from .daemon_process import running_daemon

OPS_TOKEN = "ops-token-0123456789abcdef"


class RunningDaemon:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, token: str | None = OPS_TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base + path, headers=headers) as resp,
        ):
            return resp.status, await resp.json(content_type=None)


def write_config(path: Path, pve: TestPve, pki: Pki) -> None:
    path.write_text(
        f"""
proxmox:
  - name: home
    url: {pve.url}
    token_id: pxproxy@pve!daemon
    secret: ${{PVE_TOKEN_SECRET}}
    tls: {{fingerprint: "{pki.fingerprint}"}}
    poll_interval: 200ms
    backoff_max: 500ms
    timeout: 2s
listen: {{api: "127.0.0.1:0"}}
guests:
  wiki: {{aliases: [docs]}}
api:
  tokens:
    - {{name: ops, secret: "${{OPS_TOKEN}}", scopes: [read]}}
""",
        encoding="utf-8",
    )


@contextlib.asynccontextmanager
async def daemon(config: Path) -> AsyncIterator[RunningDaemon]:
    env = {"PVE_TOKEN_SECRET": "daemon-secret", "OPS_TOKEN": OPS_TOKEN}
    async with running_daemon(config, env) as process:
        await process.wait_listening("api")
        try:
            yield RunningDaemon(process.proc, process.ports["api"])
        finally:
            if process.proc.returncode is None:
                process.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await process.finish()
    assert "daemon-secret" not in process.text
    assert OPS_TOKEN not in process.text


async def test_lookup_and_health_follow_proxmox(pve: TestPve, pki: Pki, tmp_path: Path) -> None:
    pve.apitokens["pxproxy@pve!daemon"] = "daemon-secret"
    pve.add_ct(101, "wiki", status="running", config={"net0": "name=eth0,ip=10.0.0.11/24"})
    vm = pve.add_vm(200, "game", status="running", node="pve2")
    vm.agent = {
        "interfaces": [
            {
                "name": "eth0",
                "ip-addresses": [
                    {"ip-address": "2001:db8::200", "ip-address-type": "ipv6", "prefix": 64}
                ],
            }
        ]
    }
    config = tmp_path / "pxproxy.yml"
    write_config(config, pve, pki)
    async with daemon(config) as d:

        async def resolved() -> bool:
            return (await d.get("/api/v1/lookup?ip=2001:db8::200"))[0] == 200

        await wait_for(resolved, 15, "the daemon to resolve the VM's address")
        status, body = await d.get("/api/v1/lookup?ip=10.0.0.11")
        assert status == 200
        assert body["guest"]["id"] == "lxc/101"
        status, body = await d.get("/api/v1/lookup?host=docs.example.com")
        assert (status, body["guest"]["vmid"]) == (200, 101)
        status, body = await d.get("/api/v1/lookup?ip=10.9.9.9")
        assert status == 404
        status, body = await d.get("/api/v1/guests", token=None)
        assert status == 401
        status, body = await d.get("/health", token=None)
        assert body["status"] == "ok"

        await pve.stop()

        async def health_is(want: str) -> bool:
            return (await d.get("/health", token=None))[1]["status"] == want

        await wait_for(lambda: health_is("degraded"), 15, "/health to turn degraded")
        status, body = await d.get("/health", token=None)
        (cluster,) = body["clusters"]
        assert cluster["ok"] is False
        assert "cannot reach" in cluster["error"]
        # The last snapshot keeps serving while Proxmox is down.
        status, body = await d.get("/api/v1/lookup?ip=10.0.0.11")
        assert status == 200

        await pve.start(pki.certfile, pki.keyfile)
        await wait_for(lambda: health_is("ok"), 15, "/health to recover")

        d.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await d.proc.wait()
        assert code == 0


async def run_check(config: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`pxproxy check -c config`: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        "check",
        "-c",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_command(pve: TestPve, pki: Pki, tmp_path: Path) -> None:
    pve.apitokens["pxproxy@pve!daemon"] = "daemon-secret"
    pve.add_ct(101, "wiki", status="running", config={"net0": "name=eth0,ip=10.0.0.11/24"})
    config = tmp_path / "pxproxy.yml"
    write_config(config, pve, pki)
    env = dict(os.environ, PVE_TOKEN_SECRET="daemon-secret", OPS_TOKEN=OPS_TOKEN)
    code, text, err = await run_check(config, env)
    assert code == 0, err
    assert "lxc/101" in text
    assert "10.0.0.11" in text
    assert text.rstrip().endswith("ok")

    env["PVE_TOKEN_SECRET"] = "wrong"
    code, text, _ = await run_check(config, env)
    assert code == 1
    assert "cluster home" in text
    assert "401" in text


async def test_check_rejects_bad_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "pxproxy.yml"
    config.write_text(
        "proxmox:\n  - url: https://pve:8006\n    token_id: a@pve!b\n    secret: x\n"
        "    tls: {fingerprint: nope}\n",
        encoding="utf-8",
    )
    code, _, err = await run_check(config)
    assert code == 1
    assert "proxmox[0].tls.fingerprint" in err
