"""The lab's state machine without sockets: PVE pre-checks and wording, tasks, UPIDs, shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pxproxy.lab.state import LabCluster, LabError, LabGuest, guest_ip
from pxproxy.pve.upid import parse_upid

BOOT_S = 0.05


class RecordingRuntime:
    """Records open/close calls instead of opening sockets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def open(self, guest: LabGuest) -> None:
        self.calls.append(("open", guest.vmid))

    async def close(self, guest: LabGuest) -> None:
        self.calls.append(("close", guest.vmid))


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runtime() -> RecordingRuntime:
    return RecordingRuntime()


@pytest.fixture
async def lab(runtime: RecordingRuntime) -> AsyncIterator[LabCluster]:
    cluster = LabCluster(runtime=runtime)
    cluster.add_node("pve1")
    cluster.add_node("pve2")
    cluster.add_guest(100, "qemu", "vm", "pve1", status="running", boot_time_s=BOOT_S)
    cluster.add_guest(101, "lxc", "ct", "pve1", status="running", boot_time_s=BOOT_S)
    cluster.add_guest(102, "lxc", "off", "pve2", boot_time_s=BOOT_S, shutdown_time_s=BOOT_S)
    try:
        yield cluster
    finally:
        await cluster.close()


def refused(excinfo: pytest.ExceptionInfo[LabError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.message


def test_guest_ip_is_unique_loopback_and_never_localhost() -> None:
    assert guest_ip(100) == "127.10.0.100"
    assert guest_ip(70000) == "127.11.17.112"
    ips = {guest_ip(v) for v in range(1, 200_000, 7)}
    assert len(ips) == len(range(1, 200_000, 7))
    assert "127.0.0.1" not in ips
    with pytest.raises(ValueError, match="out of range"):
        guest_ip(10**9)


async def test_lxc_prechecks_fail_at_once_with_pve_wording(lab: LabCluster) -> None:
    with pytest.raises(LabError) as started:
        lab.start(101)
    assert refused(started) == (500, "CT 101 already running")
    with pytest.raises(LabError) as stopped:
        lab.stop(102)
    assert refused(stopped) == (500, "CT 102 not running")
    with pytest.raises(LabError) as shut:
        lab.shutdown(102)
    assert refused(shut) == (500, "CT 102 not running")
    assert lab.task_log == []


async def test_qemu_start_when_running_fails_in_the_task(lab: LabCluster) -> None:
    task = await lab.start(100, "pxproxy@pve!daemon").wait()
    assert task.status == "stopped"
    assert task.exitstatus == "VM 100 already running"
    assert task.log[-1] == "TASK ERROR: VM 100 already running"
    assert not task.ok
    assert lab.guests[100].status == "running"


async def test_start_runs_for_boot_time_then_opens(
    lab: LabCluster, runtime: RecordingRuntime
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    task = lab.start(102, "root@pam")
    assert (task.status, lab.guests[102].status) == ("running", "stopped")
    await task.wait()
    assert loop.time() - began >= BOOT_S
    assert task.exitstatus == "OK"
    assert task.log[-1] == "TASK OK"
    assert runtime.calls == [("open", 102)]
    assert (task.status, lab.guests[102].status) == ("stopped", "running")
    assert lab.history(102) == ["stopped", "starting", "running"]

    await lab.shutdown(102).wait()
    assert lab.guests[102].status == "stopped"
    assert runtime.calls[-1] == ("close", 102)


async def test_fail_start_ends_with_task_error_and_stays_stopped(
    lab: LabCluster, runtime: RecordingRuntime
) -> None:
    lab.guests[102].fail_start = "startup for container '102' failed"
    task = await lab.start(102).wait()
    assert task.exitstatus == "startup for container '102' failed"
    assert task.log[-1] == "TASK ERROR: startup for container '102' failed"
    assert lab.guests[102].status == "stopped"
    assert runtime.calls == []


async def test_qemu_pause_keeps_running_and_blocks_shutdown(
    lab: LabCluster, runtime: RecordingRuntime
) -> None:
    task = await lab.suspend(100).wait()
    vm = lab.guests[100]
    assert task.type == "qmsuspend"
    assert (vm.status, vm.qmpstatus) == ("running", "paused")
    assert lab.status_current(100)["qmpstatus"] == "paused"
    assert runtime.calls == [("close", 100)]
    with pytest.raises(LabError) as shut:
        lab.shutdown(100)
    assert refused(shut) == (500, "VM is paused - cannot shutdown")

    await lab.resume(100).wait()
    assert (vm.status, vm.qmpstatus) == ("running", "running")
    assert runtime.calls[-1] == ("open", 100)

    await lab.suspend(100).wait()
    forced = await lab.shutdown(100, force_stop=True).wait()
    assert forced.exitstatus == "OK"
    assert (vm.status, vm.paused) == ("stopped", False)


async def test_qemu_hibernate_stops_with_lock_and_start_resumes(lab: LabCluster) -> None:
    await lab.suspend_todisk(100).wait()
    vm = lab.guests[100]
    assert (vm.status, vm.lock) == ("stopped", "suspended")
    assert lab.resources("vm")[0]["lock"] == "suspended"
    with pytest.raises(LabError) as resumed:
        lab.resume(100)
    assert refused(resumed) == (500, "VM 100 not running")

    task = await lab.start(100).wait()
    assert task.ok
    assert "resuming VM 100 from disk" in task.log
    assert (vm.status, vm.lock) == ("running", None)
    assert lab.history(100)[-3:] == ["hibernated", "starting", "running"]


async def test_lxc_suspend_checkpoints_and_resume_restores(lab: LabCluster) -> None:
    with pytest.raises(LabError) as todisk:
        lab.suspend_todisk(101)
    assert todisk.value.status == 400
    assert todisk.value.errors is not None
    assert "todisk" in todisk.value.errors

    task = await lab.suspend(101).wait()
    ct = lab.guests[101]
    assert task.type == "vzsuspend"
    assert (ct.status, ct.lock) == ("stopped", "suspended")
    with pytest.raises(LabError) as started:
        lab.start(101)
    assert refused(started) == (500, "CT is locked (suspended)")

    await lab.resume(101).wait()
    assert (ct.status, ct.lock) == ("running", None)
    with pytest.raises(LabError) as again:
        lab.resume(101)
    assert refused(again) == (500, "CT 101 already running")


async def test_reboot_closes_then_reopens(lab: LabCluster, runtime: RecordingRuntime) -> None:
    task = await lab.reboot(101).wait()
    assert (task.type, task.exitstatus) == ("vzreboot", "OK")
    assert runtime.calls == [("close", 101), ("open", 101)]
    assert lab.guests[101].status == "running"
    with pytest.raises(LabError) as stopped:
        lab.reboot(102)
    assert refused(stopped) == (500, "CT 102 not running")


async def test_an_action_during_a_task_hits_the_config_lock(lab: LabCluster) -> None:
    lab.guests[102].boot_time_s = 30
    lab.start(102)
    with pytest.raises(LabError) as locked:
        lab.stop(102)
    assert locked.value.status == 500
    assert "lock-102.conf' - got timeout" in locked.value.message


async def test_upids_are_real_and_parse(lab: LabCluster) -> None:
    tasks = [lab.start(102, "pxproxy@pve!daemon"), lab.stop(101), lab.suspend(100)]
    for task in tasks:
        upid = parse_upid(task.upid)
        assert upid.raw == task.upid
        assert (upid.node, upid.type, upid.id, upid.user) == (
            task.node,
            task.type,
            task.id,
            task.user,
        )
        assert (upid.pid, upid.pstart, upid.starttime) == (task.pid, task.pstart, task.starttime)
        assert lab.task(task.upid) is task
    assert [t.type for t in tasks] == ["vzstart", "vzstop", "qmsuspend"]
    assert parse_upid(tasks[0].upid).user == "pxproxy@pve!daemon"
    assert len({t.upid for t in tasks}) == 3
    await lab.wait_idle()
    status = tasks[1].status_json()
    assert status["status"] == "stopped"
    assert status["exitstatus"] == "OK"
    assert status["upid"] == tasks[1].upid
    assert tasks[1].log_json()[-1] == {"n": len(tasks[1].log), "t": "TASK OK"}
    with pytest.raises(LabError) as unknown:
        lab.task("UPID:pve1:00000001:00000001:00000001:qmstart:1:root@pam:")
    assert unknown.value.status == 400


async def test_close_cancels_and_awaits_owned_tasks(lab: LabCluster) -> None:
    lab.guests[102].boot_time_s = 60
    task = lab.start(102)
    await asyncio.sleep(0)  # let the task begin its boot wait
    await lab.close()
    assert task.status == "stopped"
    assert task.exitstatus == "interrupted by signal"
    assert lab.guests[102].status == "stopped"
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []
    with pytest.raises(LabError, match="shutting down"):
        lab.start(102)


async def test_unknown_guest_and_offline_node(lab: LabCluster) -> None:
    with pytest.raises(LabError) as missing:
        lab.start(999, node="pve1", type="lxc")
    assert refused(missing) == (500, "Configuration file 'nodes/pve1/lxc/999.conf' does not exist")
    with pytest.raises(LabError) as wrong_node:
        lab.status_current(101, node="pve2", type="lxc")
    assert wrong_node.value.status == 500

    lab.set_node_online("pve2", False)
    with pytest.raises(LabError) as offline:
        lab.start(102)
    assert refused(offline) == (595, "No route to host")
    with pytest.raises(LabError) as status:
        lab.node_status("pve2")
    assert status.value.status == 595


async def test_resources_shapes(lab: LabCluster) -> None:
    lab.guests[101].tags = ("web", "lab")
    lab.set_node_online("pve2", False)
    entries = {e["id"]: e for e in lab.resources()}
    assert set(entries) == {"node/pve1", "node/pve2", "qemu/100", "lxc/101", "lxc/102"}

    ct = entries["lxc/101"]
    for key in ("name", "uptime", "maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk"):
        assert key in ct
    for key in ("netin", "netout", "diskread", "diskwrite"):
        assert isinstance(ct[key], int)
    assert (ct["vmid"], ct["node"], ct["type"], ct["status"]) == (101, "pve1", "lxc", "running")
    assert (ct["template"], ct["tags"]) == (0, "web;lab")
    assert 0 < ct["cpu"] <= ct["maxcpu"]
    assert 0 < ct["mem"] <= ct["maxmem"]
    assert ct["uptime"] > 0

    assert entries["lxc/102"] == {
        "id": "lxc/102",
        "vmid": 102,
        "node": "pve2",
        "type": "lxc",
        "status": "unknown",
    }
    assert entries["node/pve2"]["status"] == "offline"
    assert entries["node/pve1"]["status"] == "online"
    assert entries["node/pve1"]["maxcpu"] == 8
    assert [e["type"] for e in lab.resources("vm")] == ["qemu", "lxc", "lxc"]
    assert {e["type"] for e in lab.resources("node")} == {"node"}


def test_cluster_and_node_status_shapes() -> None:
    lab = LabCluster(cluster_name="home")
    lab.add_node("pve1")
    lab.add_node("pve2", online=False)
    cluster, first, second = lab.cluster_status()
    assert cluster == {
        "type": "cluster",
        "id": "cluster",
        "name": "home",
        "nodes": 2,
        "version": 4,
        "quorate": 0,
    }
    assert (first["id"], first["local"], first["online"]) == ("node/pve1", 1, 1)
    assert (second["name"], second["online"], second["nodeid"]) == ("pve2", 0, 2)

    status = lab.node_status("pve1")
    assert len(status["loadavg"]) == 3
    assert all(isinstance(x, str) for x in status["loadavg"])
    assert status["pveversion"].startswith("pve-manager/")
    assert isinstance(status["cpuinfo"]["mhz"], str)
    assert status["memory"]["total"] == status["memory"]["used"] + status["memory"]["free"]
    assert status["rootfs"]["avail"] > 0

    standalone = LabCluster(cluster_name=None)
    standalone.add_node("pve")
    assert [e["type"] for e in standalone.cluster_status()] == ["node"]


def test_stats_move_over_time_and_counters_only_grow() -> None:
    clock = Clock()
    lab = LabCluster(clock=clock)
    lab.add_guest(150, "lxc", "busy", status="running")
    lab.add_guest(151, "qemu", "idle")
    before = lab.resources("vm")
    clock.now += 37
    after = lab.resources("vm")
    assert before[0]["cpu"] != after[0]["cpu"]
    assert after[0]["diskread"] > before[0]["diskread"]
    assert after[0]["diskwrite"] > before[0]["diskwrite"]
    assert after[0]["uptime"] == before[0]["uptime"] + 37
    assert (after[1]["cpu"], after[1]["mem"], after[1]["uptime"]) == (0, 0, 0)
    # deterministic: same time, same figures
    assert lab.resources("vm") == after


def test_from_spec_and_default() -> None:
    lab = LabCluster.from_spec(
        {
            "cluster": "home",
            "nodes": ["a", {"name": "b", "online": False}],
            "guests": [
                {"vmid": 300, "type": "qemu", "name": "vm", "node": "b", "status": "paused"},
                {"vmid": 301, "type": "lxc", "name": "ct", "ports": [80, 81], "tcp_ports": [22]},
            ],
        }
    )
    assert not lab.nodes["b"].online
    assert lab.guests[300].qmpstatus == "paused"
    assert (lab.guests[301].node, lab.guests[301].ports) == ("a", (80, 81))
    assert lab.guests[301].tcp_ports == (22,)
    with pytest.raises(ValueError, match=r"guests\[0\]: unknown key\(s\) \['colour'\]"):
        LabCluster.from_spec({"guests": [{"vmid": 1, "type": "lxc", "name": "x", "colour": 1}]})
    with pytest.raises(ValueError, match=r"guests\[0\]: missing name"):
        LabCluster.from_spec({"guests": [{"vmid": 1, "type": "lxc"}]})
    with pytest.raises(ValueError, match="unknown node"):
        LabCluster.from_spec({"guests": [{"vmid": 1, "type": "lxc", "name": "x", "node": "z"}]})

    demo = LabCluster.default(guests=12, nodes=3)
    guests = list(demo.guests.values())
    assert len(guests) == 12
    assert set(demo.nodes) == {"pve1", "pve2", "pve3"}
    assert {g.type for g in guests} == {"lxc", "qemu"}
    assert {g.status for g in guests} == {"running", "stopped"}
    assert {"wiki", "git", "db", "grafana", "minecraft"} <= {g.name for g in guests}
    assert len({g.name for g in guests}) == 12
    assert demo.guests[104].tcp_ports == (25565,)  # minecraft
    assert LabCluster.default(guests=20, nodes=1).cluster_name is None
