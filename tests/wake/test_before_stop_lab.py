"""idle.before_stop against the lab: the command really runs in the guest (`pct exec` in the
node's terminal for a container, the guest agent's exec for a VM), is audited, and only after
it and the grace does the shutdown task come. The manager runs on a fake clock, so the grace
ends when the test says; the daemon test shows the grace in /api/v1/routes and that stopping
pxproxy during the grace sends no shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from pxproxy.api.audit import AuditLog
from pxproxy.config.models import Config
from pxproxy.daemon import Daemon, make_poller
from pxproxy.idle_commands import AUDIT_NAME, IdleCommands
from pxproxy.inventory.model import GuestType
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.streams.shell_runner import StreamSettings, runner_for
from pxproxy.wake.contract import WakeState
from pxproxy.wake.manager import WakeManager
from pxproxy.wake.power import PvePowerControl
from pxproxy.wake.waker import Waker

from ..support import lab_cluster, wait_for
from .fakes import FakeClock

CLUSTER = "lab"
# vmids 7141..7159 are this file's (the lab derives guest addresses from vmids).
CONTAINER = 7141
VM = 7142
NO_AGENT = 7143
DAEMON_GUEST = 7144
ARGV = ["echo", "Server stops in 60 s"]
TOKEN = "before-stop-secret-0123"


@dataclass
class Stack:
    lab: LabServer
    manager: WakeManager
    clock: FakeClock
    audit: AuditLog

    def waker(self) -> Waker:
        gate = self.manager.gate_for(0)
        assert isinstance(gate, Waker)
        return gate

    def ran(self, vmid: int) -> list[tuple[str, ...]]:
        """The argv of every command the lab ran inside the guest."""
        return [r.argv for r in self.lab.shell_commands if r.scope == f"guest:{vmid}"]

    def tasks(self, vmid: int) -> list[str]:
        return [t.type for t in self.lab.tasks if t.id == str(vmid)]


def shell_entry(lab: LabServer, **overrides: Any) -> dict[str, Any]:
    """The lab's proxmox entry with root@pam's password too: containers need a shell."""
    return lab_cluster(
        lab,
        name=CLUSTER,
        username="root@pam",
        password=lab.credentials.root_password,
        **overrides,
    )


def game_route(vmid: int, **before_stop: object) -> dict[str, object]:
    return {
        "listen": "127.0.0.1:0",
        "guest": f"{CLUSTER}:{vmid}",
        "port": 8080,
        "idle": {
            "timeout": "10m",
            "stop_method": "shutdown",
            "before_stop": {"exec": ARGV, "grace": "60s", **before_stop},
        },
    }


@contextlib.asynccontextmanager
async def stack(lab: LabServer, vmid: int) -> AsyncIterator[Stack]:
    config = Config.model_validate(
        {"proxmox": [shell_entry(lab, poll_interval="0.1s")], "routes": [game_route(vmid)]}
    )
    inventory = Inventory()
    poller, client = make_poller(CLUSTER, config.proxmox[0], inventory, config, None)
    polling = asyncio.create_task(poller.run(), name="test-poller")
    runner = runner_for([CLUSTER], config.proxmox, {CLUSTER: client}, StreamSettings())
    audit = AuditLog()
    clock = FakeClock()
    manager = WakeManager(
        config.routes,
        inventory,
        PvePowerControl({CLUSTER: client}),
        clock=clock,
        check_interval_s=0.05,
        commands=IdleCommands(runner, lambda: audit),
    )
    try:
        await inventory.wait_until(lambda s: bool(s.guests), 10)
        await manager.start()
        s = Stack(lab, manager, clock, audit)
        await wait_for(lambda: s.waker().state is WakeState.READY, 10, "the running guest")
        yield s
    finally:
        await manager.stop()
        await runner.close()
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await client.close()


def in_grace(waker: Waker) -> bool:
    progress = waker.before_stop
    return progress is not None and progress.step == "grace"


@pytest.mark.parametrize(
    ("vmid", "kind", "via", "shutdown"),
    [(CONTAINER, "lxc", "shell", "vzshutdown"), (VM, "qemu", "agent", "qmshutdown")],
)
async def test_the_command_runs_in_the_guest_before_the_shutdown(
    lab_server: LabServer,
    caplog: pytest.LogCaptureFixture,
    vmid: int,
    kind: GuestType,
    via: str,
    shutdown: str,
) -> None:
    caplog.set_level(logging.INFO, "pxproxy.wake.before_stop")
    lab_server.cluster.add_guest(
        vmid, kind, "mc", "pve1", status="running", agent=kind == "qemu", shutdown_time_s=0.05
    )
    async with stack(lab_server, vmid) as s:
        waker = s.waker()
        s.clock.advance(600)  # idle for the whole timeout
        await wait_for(lambda: tuple(ARGV) in s.ran(vmid), 10, "the command in the guest")
        await wait_for(lambda: in_grace(waker), 10, "the command's end")
        # The command ran and ended; no shutdown yet, and none during the grace.
        assert s.tasks(vmid) == []
        assert "Server stops in 60 s" in caplog.text  # its output, in the log line
        (record,) = [r for r in s.audit.records if r.token == AUDIT_NAME]
        assert (record.action, record.guest, record.result) == ("exec", f"lab:{vmid}", "exit 0")
        assert record.detail["argv"] == ARGV
        assert record.detail["via"] == via
        s.clock.advance(59)
        assert s.tasks(vmid) == []
        assert waker.state is WakeState.READY
        s.clock.advance(1)
        await wait_for(lambda: s.tasks(vmid) == [shutdown], 10, "the shutdown after the grace")
        await wait_for(lambda: waker.state is WakeState.ASLEEP, 10, "asleep")
        assert lab_server.history(vmid)[-1] == "stopped"
        assert s.ran(vmid) == [tuple(ARGV)]  # once
        assert s.manager.stats.before_stop_failures == 0


async def test_a_vm_without_agent_is_stopped_all_the_same(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(
        NO_AGENT, "qemu", "valheim", "pve1", status="running", agent=False, shutdown_time_s=0.05
    )
    async with stack(lab_server, NO_AGENT) as s:
        waker = s.waker()
        s.clock.advance(600)
        await wait_for(lambda: in_grace(waker), 10, "the failed command's end")
        assert s.manager.stats.before_stop_failures == 1
        (record,) = [r for r in s.audit.records if r.token == AUDIT_NAME]
        assert record.result.startswith("failed: ")
        assert "agent" in record.result
        assert s.ran(NO_AGENT) == []
        assert s.tasks(NO_AGENT) == []
        s.clock.advance(60)
        await wait_for(lambda: s.tasks(NO_AGENT) == ["qmshutdown"], 10, "the shutdown")


async def test_a_held_connection_during_the_grace_keeps_the_guest_running(
    lab_server: LabServer,
) -> None:
    lab_server.cluster.add_guest(CONTAINER, "lxc", "mc", "pve1", status="running")
    async with stack(lab_server, CONTAINER) as s:
        waker = s.waker()
        s.clock.advance(600)
        await wait_for(lambda: in_grace(waker), 10, "the grace")
        with waker.hold():  # a player reconnects through the TCP route
            await wait_for(lambda: waker.before_stop is None, 10, "the stop abandoned")
            s.clock.advance(60)  # past the grace's end
            checks = waker.busy_checks
            await wait_for(lambda: waker.busy_checks > checks + 1, 10, "idle checks after it")
        assert s.manager.stats.before_stops_abandoned == 1
        assert s.tasks(CONTAINER) == []
        assert lab_server.history(CONTAINER)[-1] == "running"


async def test_the_daemon_shows_the_grace_and_stopping_it_sends_no_shutdown(
    lab_server: LabServer,
) -> None:
    lab_server.cluster.add_guest(DAEMON_GUEST, "lxc", "mc", "pve1", status="running")
    config = Config.model_validate(
        {
            "proxmox": [shell_entry(lab_server)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read"]}]},
            "routes": [
                {
                    **game_route(DAEMON_GUEST),
                    "idle": {"timeout": "200ms", "before_stop": {"exec": ARGV, "grace": "1h"}},
                }
            ],
        }
    )
    daemon = Daemon(config)
    await daemon.start()
    stopped = False
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{daemon.api_port}", timeout=aiohttp.ClientTimeout(total=10)
        ) as http:

            async def route() -> dict[str, Any]:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                async with http.get("/api/v1/routes", headers=auth) as resp:
                    listed: list[dict[str, Any]] = await resp.json()
                    return listed[0]

            async def grace_shown() -> bool:
                stopping = (await route())["stopping"]
                return stopping is not None and stopping["step"] == "grace"

            await wait_for(grace_shown, 15, "the grace in /api/v1/routes")
            shown = await route()
            assert shown["state"] == "ready"
            assert 3500 < shown["stopping"]["stopping_in_s"] <= 3600
            assert shown["idle"]["before_stop"] == {
                "exec": ARGV,
                "grace_s": 3600.0,
                "timeout_s": 30.0,
            }
        ran = [r.argv for r in lab_server.shell_commands if r.scope == f"guest:{DAEMON_GUEST}"]
        assert ran == [tuple(ARGV)]
        assert daemon.audit is not None
        (record,) = [r for r in daemon.audit.records if r.token == AUDIT_NAME]
        assert record.result == "exit 0"
        await daemon.stop()
        stopped = True
        # Stopping pxproxy ended the grace: no shutdown was sent, and nothing is left running.
        assert [t.type for t in lab_server.tasks if t.id == str(DAEMON_GUEST)] == []
        assert lab_server.history(DAEMON_GUEST)[-1] == "running"
        assert all(w._command_tasks == set() for w in daemon.wake.wakers)
    finally:
        if not stopped:
            await daemon.stop()
