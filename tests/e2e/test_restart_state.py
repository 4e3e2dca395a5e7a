"""State that survives a restart, against the lab: a daemon is stopped and a new one started
on the same state file (in-process), or a daemon subprocess meets a bad state file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.state.sqlite_store import SqliteStore

from ..support import lab_cluster, wait_for
from .daemon_process import running_daemon

TOKEN = "restart-test-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# vmids 770..779: used by no other test (the lab derives guest addresses from vmids).


def config(lab: LabServer, state: Path, routes: list[dict[str, Any]]) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "t", "secret": TOKEN}]},
            "routes": routes,
            "state": {"path": str(state)},
        }
    )


@contextlib.asynccontextmanager
async def daemon(
    lab: LabServer, state: Path, routes: list[dict[str, Any]]
) -> AsyncIterator[Daemon]:
    d = Daemon(config(lab, state, routes))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


async def get(d: Daemon, host: str, accept: str = "text/plain") -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(
            f"http://127.0.0.1:{d.proxy_port}/", headers={"Host": host, "Accept": accept}
        ) as resp,
    ):
        return resp.status, await resp.text()


async def api(d: Daemon, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{d.api_port}{path}", headers=AUTH) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


def task_kinds(lab: LabServer, vmid: int) -> list[str]:
    return [t.type for t in lab.tasks if t.id == str(vmid)]


@pytest.mark.parametrize("state_file", ["kept", "lost"])
async def test_a_vm_paused_by_idle_watch_is_asleep_after_a_restart_and_resumed(
    lab_server: LabServer, tmp_path: Path, state_file: str
) -> None:
    """With the state file, and without it (status/current's qmpstatus alone tells)."""
    lab = lab_server
    lab.cluster.add_guest(
        770, "qemu", "vm", "pve1", status="running", agent=True, static_ip=True, boot_time_s=0.1
    )
    await lab.cluster.open()
    state = tmp_path / "state.db"
    idle = {"timeout": "500ms", "wake_timeout": "10s", "stop_method": "suspend"}
    routes = [{"host": "vm.test", "guest": "vm", "port": 8080, "idle": idle}]
    async with daemon(lab, state, routes) as first:
        assert await get(first, "vm.test") == (200, "vm (vmid 770)\n")
        guest = lab.cluster.guests[770]
        await wait_for(lambda: guest.paused, 10, "the idle suspend")
        await wait_for(lambda: first.wake is not None and first.wake.stats.idle_stops == 1, 10)
    assert guest.status == "running"
    assert guest.paused
    assert task_kinds(lab, 770) == ["qmsuspend"]

    # The idle timeout is long now: a daemon that took the VM for running would leave it
    # paused (its route answering 502) and not suspend it again for an hour.
    routes[0]["idle"] = {**idle, "timeout": "1h"}
    if state_file == "lost":
        state = tmp_path / "fresh.db"
    async with daemon(lab, state, routes) as second:
        listed = await api(second, "/api/v1/routes")
        assert listed[0]["state"] == "asleep"
        assert await get(second, "vm.test") == (200, "vm (vmid 770)\n")
        assert second.wake is not None
        assert second.wake.stats.wakes_ok == 1
        assert second.wake.stats.idle_stops == 0
    assert task_kinds(lab, 770) == ["qmsuspend", "qmresume"]  # resumed; no second suspend


async def test_the_circuit_breaker_survives_a_restart(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    lab.cluster.add_guest(
        772,
        "lxc",
        "broken",
        "pve1",
        static_ip=True,
        boot_time_s=0.05,
        fail_start="startup for container '772' failed",
    )
    state = tmp_path / "state.db"
    idle = {"timeout": "1h", "wake_timeout": "10s", "retry_after": "10m"}
    routes = [{"host": "broken.test", "guest": "broken", "port": 8080, "idle": idle}]
    async with daemon(lab, state, routes) as first:
        status, body = await get(first, "broken.test", "application/json")
        assert status == 503
        assert "startup for container '772' failed" in body
    assert task_kinds(lab, 772) == ["vzstart"]

    async with daemon(lab, state, routes) as second:

        async def failed() -> bool:
            # The route is "failed" once the first poll finds the guest and its circuit.
            return (await api(second, "/api/v1/routes"))[0]["state"] == "failed"

        await wait_for(failed, 10, "the restored circuit")
        status, body = await get(second, "broken.test", "application/json")
        assert status == 503
        assert "startup for container '772' failed" in body
        assert second.wake is not None
        assert second.wake.stats.wakes_started == 0
    assert task_kinds(lab, 772) == ["vzstart"]  # no new start task


async def test_a_dhcp_guests_last_seen_address_survives_a_restart(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    # Odd vmid, no static address: only the guest agent knows its (DHCP) address.
    vm = lab.cluster.add_guest(771, "qemu", "dhcpvm", "pve1", status="running", agent=True)
    await lab.cluster.open()
    state = tmp_path / "state.db"

    def shown(guests: list[dict[str, Any]]) -> tuple[list[str], str | None] | None:
        found = [g for g in guests if g["vmid"] == 771]
        return (found[0]["ips"], found[0]["ip_source"]) if found else None

    async with daemon(lab, state, []) as first:

        async def source_is(source: str) -> bool:
            seen = shown(await api(first, "/api/v1/guests"))
            return seen is not None and seen[1] == source

        await wait_for(lambda: source_is("agent"), 10, "the agent's address")
        await lab.cluster.stop(771).wait()
        await wait_for(lambda: source_is("last-seen"), 10, "the address kept as last-seen")

    async with daemon(lab, state, []) as second:

        async def polled() -> bool:
            return shown(await api(second, "/api/v1/guests")) is not None

        await wait_for(polled, 10, "the first poll")
        assert shown(await api(second, "/api/v1/guests")) == ([vm.ip], "last-seen")


def subprocess_config(path: Path, lab: LabServer, state: Path) -> None:
    data = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"api": "127.0.0.1:0"},
        "state": {"path": str(state)},
    }
    path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML


async def health_with_a_bad_state_file(
    lab: LabServer, tmp_path: Path, prefix: tuple[str, ...] = ()
) -> str:
    cfg = tmp_path / "pxproxy.yml"
    subprocess_config(cfg, lab, tmp_path / "state" / "state.db")
    async with running_daemon(cfg, prefix=prefix) as process:
        await process.wait_listening("api")
        url = f"http://127.0.0.1:{process.ports['api']}/health"

        async def healthy() -> bool:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                return resp.status == 200 and (await resp.json())["status"] == "ok"

        await wait_for(healthy, 10, "the daemon polling the lab")
        process.proc.send_signal(signal.SIGTERM)
        await process.finish()
        assert process.proc.returncode == 0
    return process.text


async def test_a_corrupt_state_file_is_a_warning_and_the_daemon_runs(
    lab_server: LabServer, tmp_path: Path
) -> None:
    (tmp_path / "state").mkdir()
    garbage = os.urandom(8192)
    (tmp_path / "state" / "state.db").write_bytes(garbage)
    log = await health_with_a_bad_state_file(lab_server, tmp_path)
    warning = [line for line in log.splitlines() if "running without persistence" in line]
    assert len(warning) == 1, log
    assert "WARNING" in warning[0]
    assert "file is not a database" in warning[0]
    assert "Traceback" not in log
    assert (tmp_path / "state" / "state.db").read_bytes() == garbage  # left alone


async def test_a_read_only_state_file_is_a_warning_and_the_daemon_runs(
    lab_server: LabServer, tmp_path: Path
) -> None:
    directory = tmp_path / "state"
    store = await SqliteStore.open(directory / "state.db")
    await store.close()
    if os.geteuid() == 0:
        # Root writes through file modes: a read-only bind mount, in a mount namespace of
        # the daemon's own, is read-only for root too.
        mount = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        prefix: tuple[str, ...] = ("unshare", "--mount", "sh", "-c", mount, str(directory))
    else:
        (directory / "state.db").chmod(0o400)
        directory.chmod(0o500)
        prefix = ()
    try:
        log = await health_with_a_bad_state_file(lab_server, tmp_path, prefix)
    finally:
        directory.chmod(0o700)
    warning = [line for line in log.splitlines() if "running without persistence" in line]
    assert len(warning) == 1, log
    assert "WARNING" in warning[0]
    assert "readonly database" in warning[0]
    assert "Traceback" not in log
