"""The real `ansible-inventory` (PyPI ansible-core) reads the README's inventory script,
`exec pxproxy inventory "$@"`, against a daemon polling the lab: groups by cluster, node,
type, status and tag, hostvars with ansible_host, vmid, node, cluster and tags, shared guest
names made unique; `--host` answers one host; a daemon that is down fails the source loudly."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pxproxy.lab.server import LabServer
from pxproxy.lab.state import guest_ip

from .integrations_stack import READ_TOKEN, daemon_with_lab

pytestmark = pytest.mark.slow

WEB = 9860  # running LXC on pve1, tags web + db-primary
VM = 9861  # running QEMU on pve2 (address from its agent)
OFF = 9862  # stopped LXC: status_stopped, no address
DUP_A = 9864  # "ans-dup" on pve1 ...
DUP_B = 9866  # ... and "ans-dup" on pve2: both get a unique name
# The script exactly as the README gives it.
INVENTORY_SCRIPT = '#!/bin/sh\nexec pxproxy inventory "$@"\n'
RUN_TIMEOUT_S = 60.0


@dataclass
class Ran:
    code: int
    out: str
    err: str


def install(tmp_path: Path) -> tuple[Path, Path]:
    """The inventory script, and a bin directory whose `pxproxy` is this checkout's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "pxproxy"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pxproxy "$@"\n', encoding="utf-8")
    script = tmp_path / "pxproxy-inventory"
    script.write_text(INVENTORY_SCRIPT, encoding="utf-8")
    for path in (wrapper, script):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script, bin_dir


def environment(tmp_path: Path, bin_dir: Path, api: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PXPROXY_", "ANSIBLE_"))}
    home = tmp_path / "home"
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),
        ANSIBLE_HOME=str(home / ".ansible"),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        # A source that fails is an error, not a warning and an empty inventory.
        ANSIBLE_INVENTORY_UNPARSED_FAILED="true",
        ANSIBLE_INVENTORY_ENABLED="script",
        PXPROXY_API=api,
        PXPROXY_TOKEN=READ_TOKEN,
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


async def run(env: dict[str, str], *argv: str) -> Ran:
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Ran(proc.returncode, out.decode(), err.decode())


def hosts_of(inventory: dict[str, Any], group: str) -> list[str]:
    return sorted(inventory.get(group, {}).get("hosts", []))


async def test_ansible_inventory_lists_groups_and_hostvars(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    lab.cluster.add_node("pve2")
    lab.cluster.add_guest(
        WEB, "lxc", "ans-web", "pve1", status="running", tags=["web", "db-primary"]
    )
    lab.cluster.add_guest(VM, "qemu", "ans-vm", "pve2", status="running", agent=True)
    lab.cluster.add_guest(OFF, "lxc", "ans-off", "pve1", static_ip=False)
    lab.cluster.add_guest(DUP_A, "lxc", "ans-dup", "pve1", status="running")
    lab.cluster.add_guest(DUP_B, "lxc", "ans-dup", "pve2", static_ip=False)
    script, bin_dir = install(tmp_path)
    async with daemon_with_lab(lab, tmp_path) as stack:
        env = environment(tmp_path, bin_dir, stack.api)
        listed = await run(env, "ansible-inventory", "-i", str(script), "--list")
        assert listed.code == 0, listed.err
        inventory = json.loads(listed.out)
        hostvars = inventory["_meta"]["hostvars"]
        assert sorted(hostvars) == [
            "ans-off",
            "ans-vm",
            "ans-web",
            f"lab-ans-dup-{DUP_A}",
            f"lab-ans-dup-{DUP_B}",
        ]
        web = hostvars["ans-web"]
        assert web["ansible_host"] == guest_ip(WEB)
        assert web["vmid"] == WEB
        assert web["node"] == "pve1"
        assert web["cluster"] == "lab"
        assert web["tags"] == ["web", "db-primary"]
        assert hostvars["ans-vm"]["ansible_host"] == guest_ip(VM)
        assert "ansible_host" not in hostvars["ans-off"]
        assert hosts_of(inventory, "node_pve1") == [
            "ans-off",
            "ans-web",
            f"lab-ans-dup-{DUP_A}",
        ]
        assert hosts_of(inventory, "node_pve2") == ["ans-vm", f"lab-ans-dup-{DUP_B}"]
        assert hosts_of(inventory, "type_qemu") == ["ans-vm"]
        assert hosts_of(inventory, "status_stopped") == ["ans-off", f"lab-ans-dup-{DUP_B}"]
        assert hosts_of(inventory, "tag_web") == ["ans-web"]
        assert hosts_of(inventory, "tag_db_primary") == ["ans-web"]
        assert len(hosts_of(inventory, "cluster_lab")) == 5
        assert {"node_pve1", "type_lxc", "status_running", "tag_web"} <= set(
            inventory["all"]["children"]
        )

        host = await run(env, "ansible-inventory", "-i", str(script), "--host", "ans-web")
        assert host.code == 0, host.err
        assert json.loads(host.out) == web
        # The script's own --host, as Ansible calls a script without _meta.
        direct = await run(env, str(script), "--host", f"lab-ans-dup-{DUP_A}")
        assert direct.code == 0, direct.err
        assert json.loads(direct.out)["vmid"] == DUP_A
        unknown = await run(env, str(script), "--host", "nobody")
        assert (unknown.code, json.loads(unknown.out)) == (0, {})


async def test_a_daemon_that_is_down_fails_the_inventory_source(tmp_path: Path) -> None:
    script, bin_dir = install(tmp_path)
    env = environment(tmp_path, bin_dir, "http://127.0.0.1:1")
    direct = await run(env, str(script), "--list")
    assert direct.code == 1
    assert direct.out == ""
    assert "cannot reach the pxproxy API at http://127.0.0.1:1" in direct.err
    listed = await run(env, "ansible-inventory", "-i", str(script), "--list")
    assert listed.code != 0
    assert "cannot reach the pxproxy API" in listed.err
