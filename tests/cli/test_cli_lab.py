"""Every client command by name, as a user runs it: `pxproxy ...` subprocesses against a
`pxproxy run` subprocess polling the lab. Refs by name, wrong nodes, ambiguous names."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pxproxy.lab.server import LabServer

from ..e2e.daemon_process import running_daemon
from ..support import lab_cluster, wait_for
from .process import Result, cli, environment

pytestmark = pytest.mark.slow

WIKI = 7902  # running LXC: exec, journal, tail, lookups; behind the route wiki.cli.test
WEB_A = 7904  # "cli-web" on pve1 ...
WEB_B = 7905  # ... and "cli-web" on pve2: an ambiguous name
SLEEPY = 7906  # stopped; the route sleepy.cli.test wakes it (idle-watch)
COLD = 7908  # stopped, no route: `start --wait`
TOKEN = "cli-lab-token-0123456"


@dataclass
class Env:
    lab: LabServer
    env: dict[str, str]

    async def run(self, *args: str) -> Result:
        return await cli(*args, env=self.env)


def write_config(path: Path, lab: LabServer) -> None:
    cluster = lab_cluster(lab, username="root@pam", password=lab.credentials.root_password)
    config = {
        "proxmox": [cluster],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "exec", "power"]}]},
        "routes": [
            {"host": "wiki.cli.test", "guest": f"lab:{WIKI}", "port": 8080},
            {
                "host": "sleepy.cli.test",
                "guest": "cli-sleepy",
                "port": 8080,
                "idle": {"timeout": "10m", "wake_timeout": "1m"},
            },
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture
async def daemon(lab_server: LabServer, tmp_path: Path) -> AsyncIterator[Env]:
    lab = lab_server
    lab.cluster.add_node("pve2")
    lab.cluster.add_guest(WIKI, "lxc", "cli-wiki", "pve1", status="running")
    lab.cluster.add_guest(WEB_A, "lxc", "cli-web", "pve1", status="running")
    lab.cluster.add_guest(WEB_B, "lxc", "cli-web", "pve2")
    lab.cluster.add_guest(SLEEPY, "lxc", "cli-sleepy", "pve1", boot_time_s=0.5)
    lab.cluster.add_guest(COLD, "lxc", "cli-cold", "pve2", boot_time_s=1.5)
    await lab.cluster.open()
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab)
    async with running_daemon(config) as proc:
        await proc.wait_listening("api", "proxy")
        env = Env(
            lab,
            environment(PXPROXY_API=f"127.0.0.1:{proc.ports['api']}", PXPROXY_TOKEN=TOKEN),
        )

        async def polled() -> bool:
            result = await env.run("ls", "--json")
            return result.code == 0 and len(json.loads(result.out)) == len(lab.cluster.guests)

        await wait_for(polled, 20, "the first poll")
        yield env
    assert "Traceback" not in proc.text, proc.text


async def test_ls_lookup_and_routes(daemon: Env) -> None:
    result = await daemon.run("ls")
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["NAME", "VMID", "NODE", "TYPE", "STATUS", "IPS", "UPTIME"]
    by_vmid = {int(r.split()[1]): r.split() for r in rows}
    assert sorted(by_vmid) == [WIKI, WEB_A, WEB_B, SLEEPY, COLD]
    assert by_vmid[WIKI][:5] == ["cli-wiki", str(WIKI), "pve1", "lxc", "running"]
    assert daemon.lab.cluster.guests[WIKI].ip in by_vmid[WIKI][5].split(",")
    assert by_vmid[COLD][-1] == "-"  # stopped: no uptime
    # Filters pass through to the API.
    result = await daemon.run("ls", "--node", "pve2", "--json")
    assert sorted(g["vmid"] for g in json.loads(result.out)) == [WEB_B, COLD]

    ip = daemon.lab.cluster.guests[WIKI].ip
    result = await daemon.run("lookup", ip)
    assert result.code == 0, result.err
    fields = dict(line.split(None, 1) for line in result.out.splitlines())
    assert fields["match"] == f"ip {ip}"
    assert (fields["guest"], fields["name"], fields["node"]) == (f"lab:{WIKI}", "cli-wiki", "pve1")
    result = await daemon.run("lookup", "wiki.cli.test", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert (doc["match"], doc["guest"]["vmid"]) == ("host", WIKI)
    result = await daemon.run("lookup", "nothing.cli.test")
    assert result.code == 1
    assert "404 Not Found: no guest or node matches host 'nothing.cli.test'" in result.err

    result = await daemon.run("routes")
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["ROUTE", "GUEST", "UPSTREAM", "IDLE", "STATE"]
    assert rows[0].split() == ["wiki.cli.test", f"lab:{WIKI}", "http:8080", "-", "ready"]
    assert rows[1].split()[:2] == ["sleepy.cli.test", "cli-sleepy"]
    assert rows[1].split()[-1] == "asleep"
    assert "shutdown after 10m" in rows[1]


async def test_exec_journal_and_tail_by_name(daemon: Env) -> None:
    result = await daemon.run("exec", "cli-wiki", "--", "cat", "/etc/hostname")
    assert (result.code, result.out) == (0, "cli-wiki\n"), result.err
    # The command's status is the CLI's.
    result = await daemon.run("exec", f"lab:{WIKI}", "--", "cat", "/no/such/file")
    assert result.code == 1
    assert "No such file" in result.out + result.err

    result = await daemon.run("journal", "cli-wiki", "-n", "3", "--no-follow")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 3
    assert all("cli-wiki" in line for line in result.out.splitlines())

    result = await daemon.run("tail", "cli-wiki", "/etc/hostname", "--no-follow")
    assert (result.code, result.out) == (0, "cli-wiki\n"), result.err

    # A name no guest has but a node has: the node's journal, and its files.
    result = await daemon.run("journal", "pve1", "-n", "2", "--no-follow")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2
    result = await daemon.run("tail", "pve1", "/etc/hostname", "--no-follow")
    assert (result.code, result.out) == (0, "pve1\n"), result.err


async def test_errors_name_the_fix(daemon: Env) -> None:
    # Asked on the wrong node: the message names the right one, for every command.
    for args in (
        ("journal", f"pve2/{WIKI}", "--no-follow"),
        ("exec", f"pve2/{WIKI}", "--", "true"),
        ("start", f"pve2/{WIKI}"),
    ):
        result = await daemon.run(*args)
        assert result.code == 1, args
        assert f"404 Not Found: guest {WIKI} is on node pve1, not pve2" in result.err, args

    # A name two guests share: both listed, exit 1, nothing run.
    result = await daemon.run("exec", "cli-web", "--", "true")
    assert result.code == 1
    first, *candidates = result.err.splitlines()
    assert "2 guests match ref 'cli-web'" in first
    assert sorted(c.split()[0] for c in candidates) == [f"lab:{WEB_A}", f"lab:{WEB_B}"]
    assert "node pve2, stopped" in result.err

    # A guest without an idle route cannot be woken through idle-watch.
    result = await daemon.run("wake", "cli-cold")
    assert result.code == 1
    assert "has no route with idle: settings" in result.err


async def test_start_wait_shows_the_task(daemon: Env) -> None:
    result = await daemon.run("start", "cli-cold", "--wait")
    assert result.code == 0, result.err
    (line,) = result.out.splitlines()
    assert line.startswith("task UPID:pve2:")
    assert f":vzstart:{COLD}:" in line
    assert " OK in " in line
    assert line.endswith(f"(start of lab:{COLD})")
    # A boot of 1.5 s: a progress line at once, and one a second later.
    assert "start cli-cold: waiting for the Proxmox task (0s)" in result.err
    assert "start cli-cold: waiting for the Proxmox task (1s)" in result.err
    assert daemon.lab.cluster.guests[COLD].status == "running"

    # Without --wait: the task is named and the command returns.
    result = await daemon.run("stop", f"pve2/{COLD}")
    assert result.code == 0, result.err
    assert result.out.startswith("task UPID:pve2:")
    assert result.out.rstrip().endswith(f"started (stop of lab:{COLD})")


async def test_wake_follows_each_stage_to_ready(daemon: Env) -> None:
    result = await daemon.run("wake", "cli-sleepy")
    assert result.code == 0, result.err
    stages = [line.split(None, 1)[1] for line in result.out.splitlines()]
    assert stages[0] == "waking: starting"
    assert stages[-1] == "ready"
    assert daemon.lab.cluster.guests[SLEEPY].status == "running"
    starts = [t for t in daemon.lab.tasks if t.id == str(SLEEPY) and t.type.endswith("start")]
    assert len(starts) == 1
    # The route shows it, and a second wake has nothing to do.
    result = await daemon.run("routes", "--json")
    assert [r["state"] for r in json.loads(result.out)] == ["ready", "ready"]
    result = await daemon.run("wake", f"lab:{SLEEPY}")
    assert result.code == 0, result.err
    assert result.out.split(None, 1)[1].strip() == "ready (it was already awake)"
