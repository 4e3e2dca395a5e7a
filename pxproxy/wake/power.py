"""The narrow power interface idle-watch needs from Proxmox, and its PVE implementation.

Each call returns once the Proxmox task has ended and raises PowerError (carrying the task's
exit status or PVE's message) when it did not succeed, or PowerOutcomeUnknown when Proxmox
could not be asked how it ended.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable, Mapping
from typing import Protocol

from ..inventory.model import Guest, GuestType
from ..pve.errors import (
    PveConnectionError,
    PveError,
    PveNodeUnreachableError,
    PveTaskFailedError,
    PveTaskTimeoutError,
)
from ..pve.models import TaskStatus

# How long to wait for a start/stop/pause/resume task; PVE's own start timeout is in this range.
TASK_TIMEOUT_S = 300.0
# Extra time granted on top of a shutdown's own timeout for the forced stop that follows it.
SHUTDOWN_MARGIN_S = 30.0


class PowerError(Exception):
    """A power action failed. `message` is what Proxmox said (task exit status or error)."""

    def __init__(self, guest: str, action: str, message: str, *, upid: str | None = None) -> None:
        super().__init__(f"{action} of {guest} failed: {message}")
        self.guest = guest
        self.action = action
        self.message = message
        self.upid = upid


class PowerOutcomeUnknown(PowerError):
    """Proxmox could not be reached, or did not say how the task ended: the action may have
    happened or not. Only a later look at the guest (the inventory) tells."""


# After these nobody knows whether the request reached Proxmox or how its task ended.
_OUTCOME_UNKNOWN = (PveConnectionError, PveNodeUnreachableError, PveTaskTimeoutError)


def power_error(guest: str, action: str, exc: PveError, *, upid: str | None = None) -> PowerError:
    """The PowerError for a Proxmox error met while running `action` on `guest`."""
    if isinstance(exc, PveTaskFailedError):
        return PowerError(guest, action, exc.exitstatus, upid=exc.upid)
    if isinstance(exc, _OUTCOME_UNKNOWN):
        return PowerOutcomeUnknown(guest, action, exc.message, upid=upid)
    return PowerError(guest, action, exc.message, upid=upid)


class PowerControl(Protocol):
    """Power actions on one guest; each returns when its Proxmox task has ended, raises
    PowerError when it failed and PowerOutcomeUnknown when Proxmox could not say."""

    async def start(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
        """Start and wait for the task; setting `poke` asks for its status again at once."""

    async def stop(self, guest: Guest) -> None: ...

    async def shutdown(self, guest: Guest, timeout_s: float) -> None:
        """Graceful, turned into a hard stop by PVE (forceStop) after timeout_s."""

    async def pause(self, guest: Guest) -> None:
        """QEMU: pause in RAM (suspend without todisk). LXC: PVE's (CRIU) suspend."""

    async def hibernate(self, guest: Guest) -> None:
        """QEMU: suspend to disk; woken with start."""

    async def resume(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None: ...


class PowerApi(Protocol):
    """The part of PveClient that PvePowerControl uses (a test can fake it)."""

    async def guest_action(
        self, kind: GuestType, node: str, vmid: int, action: str, **params: str | int
    ) -> str: ...

    async def wait_task(
        self, upid: str, timeout_s: float, *, poke: asyncio.Event | None = None
    ) -> TaskStatus: ...


def guest_label(guest: Guest) -> str:
    """How messages name a guest: "wiki (lxc/101)"."""
    return f"{guest.name} ({guest.id})" if guest.name else guest.id


class PvePowerControl:
    """PowerControl over one PveClient per cluster (keyed by the inventory's cluster name).

    Also the plain path of the power API (`send` and `wait`), and the record of which task
    sent which Proxmox task, so the API can join a wake's own start (`sent_by`)."""

    def __init__(
        self, clients: Mapping[str, PowerApi], *, task_timeout_s: float = TASK_TIMEOUT_S
    ) -> None:
        self._clients = dict(clients)
        self._task_timeout_s = task_timeout_s
        # The UPID of the last Proxmox task each asyncio task sent (a waker's wake), while
        # that asyncio task lives; and an event set on every send, for those waiting for one.
        # Weak: an entry goes with its task, and nobody asks after a task nobody holds.
        self._sent: weakref.WeakKeyDictionary[asyncio.Task[object], str] = (
            weakref.WeakKeyDictionary()
        )
        self._sent_event = asyncio.Event()

    def serves(self, cluster: str) -> bool:
        return cluster in self._clients

    def sent_by(self, task: asyncio.Task[object]) -> str | None:
        """The UPID of the last Proxmox task `task` sent, if any."""
        return self._sent.get(task)

    def next_send(self) -> Awaitable[bool]:
        """Done at the next Proxmox task sent through this control. A plain function, so the
        event is the one current when it is called, not when a task first runs it."""
        return self._sent_event.wait()

    async def send(self, guest: Guest, action: str, **params: str | int) -> str:
        """Send `action` and return its UPID, without waiting for the task (PveError raised)."""
        client = self._client(guest, action)
        upid = await client.guest_action(guest.type, guest.node, guest.vmid, action, **params)
        task = asyncio.current_task()
        if task is not None:
            self._sent[task] = upid
        event, self._sent_event = self._sent_event, asyncio.Event()
        event.set()
        return upid

    async def wait(
        self, guest: Guest, upid: str, timeout_s: float, *, poke: asyncio.Event | None = None
    ) -> TaskStatus:
        """The task's end (PveError raised, PveTaskTimeoutError past `timeout_s`)."""
        return await self._client(guest, "wait").wait_task(upid, timeout_s, poke=poke)

    def _client(self, guest: Guest, action: str) -> PowerApi:
        client = self._clients.get(guest.cluster)
        if client is None:
            raise PowerError(
                guest_label(guest), action, f"no Proxmox client for cluster {guest.cluster!r}"
            )
        return client

    async def start(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
        await self._run(guest, "start", self._task_timeout_s, poke=poke)

    async def stop(self, guest: Guest) -> None:
        await self._run(guest, "stop", self._task_timeout_s)

    async def shutdown(self, guest: Guest, timeout_s: float) -> None:
        # PVE takes whole seconds; forceStop makes the task stop the guest instead of failing.
        seconds = max(1, math.ceil(timeout_s))
        await self._run(
            guest, "shutdown", seconds + SHUTDOWN_MARGIN_S, timeout=seconds, forceStop=1
        )

    async def pause(self, guest: Guest) -> None:
        await self._run(guest, "suspend", self._task_timeout_s)

    async def hibernate(self, guest: Guest) -> None:
        if guest.type != "qemu":
            raise PowerError(guest_label(guest), "hibernate", "only QEMU VMs can hibernate")
        await self._run(guest, "suspend", self._task_timeout_s, todisk=1)

    async def resume(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
        await self._run(guest, "resume", self._task_timeout_s, poke=poke)

    async def _run(
        self,
        guest: Guest,
        action: str,
        wait_s: float,
        *,
        poke: asyncio.Event | None = None,
        **params: str | int,
    ) -> None:
        label = guest_label(guest)
        upid: str | None = None
        try:
            upid = await self.send(guest, action, **params)
            status = await self.wait(guest, upid, wait_s, poke=poke)
        except PveError as exc:
            raise power_error(label, action, exc, upid=upid) from exc
        if not status.ok:
            raise PowerError(label, action, status.exitstatus or "task failed", upid=upid)
