"""PvePowerControl over a fake client: which PVE call each action makes, and its errors."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.inventory.model import GuestType
from pxproxy.pve.errors import (
    PveConnectionError,
    PveError,
    PveNodeUnreachableError,
    PveServerError,
    PveTaskTimeoutError,
    PveTimeoutError,
)
from pxproxy.pve.models import TaskStatus
from pxproxy.wake.power import PowerError, PowerOutcomeUnknown, PvePowerControl

from .fakes import CLUSTER, guest

UPID = "UPID:pve:0000AAAA:00000001:66000000:vzstart:101:root@pam:"


class FakeApi:
    def __init__(
        self,
        exitstatus: str = "OK",
        error: Exception | None = None,
        wait_error: Exception | None = None,
    ) -> None:
        self.actions: list[tuple[str, str, int, str, dict[str, str | int]]] = []
        self.waits: list[float] = []
        self.exitstatus = exitstatus
        self.error = error
        self.wait_error = wait_error  # raised by wait_task: the task was created, then this

    async def guest_action(
        self, kind: GuestType, node: str, vmid: int, action: str, **params: str | int
    ) -> str:
        self.actions.append((kind, node, vmid, action, params))
        if self.error is not None:
            raise self.error
        return UPID

    async def wait_task(
        self, upid: str, timeout_s: float, *, poke: asyncio.Event | None = None
    ) -> TaskStatus:
        self.waits.append(timeout_s)
        if self.wait_error is not None:
            raise self.wait_error
        return TaskStatus(upid=upid, node="pve", running=False, exitstatus=self.exitstatus)


async def test_each_action_maps_to_its_pve_call() -> None:
    api = FakeApi()
    power = PvePowerControl({CLUSTER: api})
    ct, vm = guest(101, "ct"), guest(100, "vm", kind="qemu")
    await power.start(ct)
    await power.stop(ct)
    await power.shutdown(ct, 12.5)
    await power.pause(vm)
    await power.hibernate(vm)
    await power.resume(vm)
    assert api.actions == [
        ("lxc", "pve", 101, "start", {}),
        ("lxc", "pve", 101, "stop", {}),
        ("lxc", "pve", 101, "shutdown", {"timeout": 13, "forceStop": 1}),
        ("qemu", "pve", 100, "suspend", {}),
        ("qemu", "pve", 100, "suspend", {"todisk": 1}),
        ("qemu", "pve", 100, "resume", {}),
    ]
    # The shutdown task may take its timeout plus the forced stop.
    assert api.waits[2] > 13


async def test_a_failed_task_raises_with_its_exit_status() -> None:
    power = PvePowerControl({CLUSTER: FakeApi(exitstatus="start failed: no disk")})
    with pytest.raises(PowerError) as caught:
        await power.start(guest(101, "ct"))
    assert caught.value.message == "start failed: no disk"
    assert caught.value.upid == UPID
    assert caught.value.action == "start"


async def test_warnings_count_as_success() -> None:
    await PvePowerControl({CLUSTER: FakeApi(exitstatus="WARNINGS: 2")}).start(guest(101, "ct"))


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (PveServerError("CT 101 already running", status=500), "CT 101 already running"),
        (PveTaskTimeoutError(UPID, 300), f"task {UPID} still running after 300.0s"),
    ],
)
async def test_pve_errors_become_power_errors(error: Exception, message: str) -> None:
    power = PvePowerControl({CLUSTER: FakeApi(error=error)})
    with pytest.raises(PowerError) as caught:
        await power.start(guest(101, "ct"))
    assert caught.value.message == message


async def test_unknown_cluster_and_container_hibernate_are_refused() -> None:
    power = PvePowerControl({})
    with pytest.raises(PowerError, match="no Proxmox client for cluster 'home'"):
        await power.start(guest(101, "ct"))
    with pytest.raises(PowerError, match="only QEMU VMs can hibernate"):
        await PvePowerControl({CLUSTER: FakeApi()}).hibernate(guest(101, "ct"))


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (PveConnectionError("Cannot connect to host 127.0.0.1:8006"), True),
        (PveTimeoutError("timed out"), True),
        (PveNodeUnreachableError("no route to node", status=595), True),
        (PveTaskTimeoutError(UPID, 300), True),
        (PveServerError("CT 101 already running", status=500), False),
        (PveError("bad answer", status=400), False),
    ],
)
async def test_a_proxmox_gone_after_the_start_was_sent_leaves_the_outcome_unknown(
    error: PveError, unknown: bool
) -> None:
    """A task created, then its status unreadable: neither success nor a failure."""
    api = FakeApi(wait_error=error)
    with pytest.raises(PowerError) as caught:
        await PvePowerControl({CLUSTER: api}).start(guest(101, "ct"))
    assert len(api.actions) == 1
    assert isinstance(caught.value, PowerOutcomeUnknown) is unknown
    assert caught.value.message == error.message
    assert caught.value.upid == UPID
