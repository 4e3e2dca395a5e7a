"""`pxproxy check` and `pxproxy run` as users run them: every problem at once, never a traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pxproxy.lab.server import LabServer

from ..support import lab_cluster

FINGERPRINT = ":".join(["AB"] * 32)

# Eleven problems, one of each kind. Two variables are missing.
MANY_PROBLEMS = f"""
proxmox:
  - url: https://pve.example.com:8006
    token_id: pxproxy@pve!daemon
    secret: ${{PXTEST_PVE_SECRET}}
    tls: {{verify: false, fingerprint: "{FINGERPRINT}"}}
    tsl: {{}}
  - name: second
    url: pve2.example.com
    username: root@pam
    password: x
listen: {{proxy: "0.0.0.0:18080", api: "127.0.0.1:18081"}}
api:
  tokens:
    - {{name: ops, secret: "${{PXTEST_OPS_TOKEN}}", guests: "*"}}
routes:
  - host: wiki.example.com
    guest: wiki
    port: 80
    idle: {{timeout: 0, depends_on: [db]}}
  - host: Wiki.Example.COM.
    guest: other
    port: 80
  - host: db.example.com
    guest: db
    port: 5432
    idle: {{depends_on: [wiki]}}
  - listen: "0.0.0.0:18081"
    guest: mc
    port: 25565
    idle: {{depends_on: [mc]}}
"""

EXPECTED = [
    "proxmox[0].secret: environment variable PXTEST_PVE_SECRET is not set",
    "proxmox[0].tls.verify: false contradicts proxmox[0].tls.fingerprint",
    "proxmox[0].tsl: unknown key; did you mean tls?",
    "proxmox[1].url: 'pve2.example.com' has no scheme: write https://pve2.example.com:8006",
    "api.tokens[0].secret: environment variable PXTEST_OPS_TOKEN is not set",
    'api.tokens[0].guests: must be a list, e.g. ["*"]',
    "routes[0].idle.timeout: must be more than 0s",
    "routes[0].idle.depends_on[0]: depends_on forms a cycle: wiki -> db -> wiki",
    "routes[1].host: 'Wiki.Example.COM.' is already routes[0].host",
    "routes[3].listen: 0.0.0.0:18081 clashes with listen.api (127.0.0.1:18081)",
    "routes[3].idle.depends_on[0]: 'mc' is this route's own guest",
]


async def run_pxproxy(*args: str, timeout_s: float = 30.0) -> tuple[int, str, str]:
    """`python -m pxproxy ARGS`: (exit code, stdout, stderr), while the test's loop serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PXTEST_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["check", "run"])
async def test_every_problem_in_one_run(command: str, tmp_path: Path) -> None:
    path = tmp_path / "pxproxy.yml"
    path.write_text(MANY_PROBLEMS, encoding="utf-8")
    code, out, err = await run_pxproxy(command, "-c", str(path))
    assert code == 1
    assert "Traceback" not in out + err
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"pxproxy: {path}: invalid configuration, {len(EXPECTED)} problems:"
    assert len(lines) == 1 + len(EXPECTED)
    for line, expected in zip(lines[1:], EXPECTED, strict=True):
        assert line.startswith(expected), (line, expected)


def _taken_port() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def _config(lab: LabServer, key: str, address: str, tmp_path: Path) -> Path:
    """A valid config against the lab whose listener `key` is on `address`; the other
    listeners get free ports."""
    data: dict[str, Any] = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "routes": [
            {"host": "wiki.example.com", "guest": "wiki", "port": 80},
            {"listen": "127.0.0.1:0", "guest": "wiki", "port": 22},
        ],
    }
    if key == "routes[1].listen":
        data["routes"][1]["listen"] = address
    else:
        data["listen"][key.removeprefix("listen.")] = address
    path = tmp_path / "pxproxy.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("key", ["listen.api", "listen.proxy", "routes[1].listen"])
async def test_a_port_in_use_is_one_line(key: str, lab_server: LabServer, tmp_path: Path) -> None:
    with _taken_port() as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        code, out, err = await run_pxproxy(
            "run", "-c", str(_config(lab_server, key, address, tmp_path))
        )
    assert code == 1
    text = out + err
    assert "Traceback" not in text
    # Everything started before the failing listener was stopped again.
    assert "Unclosed" not in text
    errors = [line for line in err.splitlines() if line.startswith("pxproxy: ")]
    assert errors == [
        f"pxproxy: {key} {address}: address already in use (another process, "
        "or another pxproxy, listens there)"
    ]


async def test_an_address_of_no_interface_is_one_line(
    lab_server: LabServer, tmp_path: Path
) -> None:
    # 192.0.2.0/24 is TEST-NET-1: no interface of a test machine has it.
    address = "192.0.2.1:18555"
    code, _, err = await run_pxproxy(
        "run", "-c", str(_config(lab_server, "listen.api", address, tmp_path))
    )
    assert code == 1
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"pxproxy: listen.api {address}: cannot assign the address: no interface of this host "
        "has it"
    )
