"""The one power path: the API's power actions and idle-watch's go to Proxmox the same way.

A guest with a waker (an idle route, or a dependency of one) is acted on through it, so
idle-watch knows at once what the API did, and the API sees the wake state: a start or resume
wakes it (a guest already waking is joined: its own start's UPID, no second start), a stop,
shutdown or suspend records how it sleeps (a VM suspended through the API is resumed by the
next request). Other guests get the plain action.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple

from ..inventory.model import Guest
from ..pve.models import TaskStatus
from .contract import WakeError, WakeState
from .manager import WakeManager
from .power import PvePowerControl

_WAKES = ("start", "resume")
_SLEEPS = ("stop", "shutdown", "suspend")
_IN_FLIGHT = (WakeState.WAKING, WakeState.STOPPING)


class PowerConflict(Exception):
    """A power action refused because idle-watch is waking or stopping the guest (409)."""

    def __init__(self, guest: str, message: str) -> None:
        super().__init__(f"{guest}: {message}")
        self.guest = guest
        self.message = message


class PowerTicket(NamedTuple):
    """A power action sent: its Proxmox task, and whether it is a wake's own (joined)."""

    upid: str
    joined_wake: bool


class PowerService:
    """Power actions on any guest, through its waker when it has one."""

    def __init__(self, control: PvePowerControl, wake: WakeManager) -> None:
        self._control = control
        self._wake = wake

    def serves(self, cluster: str) -> bool:
        return self._control.serves(cluster)

    async def act(self, guest: Guest, action: str) -> PowerTicket:
        """Send `action` (PveError raised as is; WakeError for a wake that failed before it
        sent anything) and return its task, without waiting for it."""
        waker = self._wake.waker_for(guest)
        if waker is not None and action in _SLEEPS and waker.state in _IN_FLIGHT:
            # A stop during a wake (or during idle-watch's own stop) would leave the two
            # fighting: the wake failing on a guest going down, or the wrong way to wake it.
            raise PowerConflict(
                waker.ref, f"a {waker.state.value} is in flight; {action} it once that ends"
            )
        if waker is not None and action in _WAKES:
            task = waker.wake_for_api()
            if task is not None:
                upid = await self._sent_by(task)
                if upid is not None:
                    return PowerTicket(upid, joined_wake=True)
                if waker.state is WakeState.FAILED:
                    raise WakeError(waker.ref, waker.error or "the wake failed", 0)
            # Awake already: Proxmox says what it makes of the action ("already running").
        upid = await self._control.send(guest, action)
        if waker is not None:
            if action in _SLEEPS:
                waker.slept_by_api(action, guest)
            else:
                waker.note_power_action(action)
        return PowerTicket(upid, joined_wake=False)

    async def wait(self, guest: Guest, upid: str, timeout_s: float) -> TaskStatus:
        """The task's end; PveTaskTimeoutError (naming the UPID) past `timeout_s`."""
        return await self._control.wait(guest, upid, timeout_s)

    async def _sent_by(self, wake: asyncio.Task[object]) -> str | None:
        """The start or resume the wake sends, once it has; None if it ends without one."""
        while True:
            upid = self._control.sent_by(wake)
            if upid is not None or wake.done():
                return upid
            sent = asyncio.ensure_future(self._control.next_send())
            try:
                # The wake itself is only watched: a caller that leaves does not cancel it.
                await asyncio.wait({wake, sent}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sent.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sent
