"""What the proxy needs from idle-watch, and nothing more: a gate per route.

The proxy asks the gate for a ready upstream before forwarding, reports activity while bytes
flow, and holds the gate open for as long as a connection (WebSocket, SSE, TCP) stays open.
wake/ implements it; routes without `idle:` get `AlwaysReady`. Nothing here knows aiohttp.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class WakeState(StrEnum):
    ASLEEP = "asleep"
    WAKING = "waking"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WakeProgress:
    """One step of a wake, as the loading page shows it."""

    state: WakeState
    step: str  # "starting", "waiting for the port", "ready", or the error text
    error: str | None = None


class WakeError(Exception):
    """The guest could not be made ready; `message` is what the user should see (the
    Proxmox error for a failed start), `retry_after_s` when to try again."""

    def __init__(self, guest: str, message: str, retry_after_s: float) -> None:
        super().__init__(f"{guest}: {message}")
        self.guest = guest
        self.message = message
        self.retry_after_s = retry_after_s


class WakeTimeout(WakeError):
    """Still not ready after wake_timeout."""


class Gate(Protocol):
    @property
    def state(self) -> WakeState: ...

    @property
    def wake_timeout_s(self) -> float: ...

    async def ready(self, *, wake: bool = True) -> None:
        """Return once the guest is ready, waking it (single-flight) if it sleeps and `wake`.
        Raises WakeError (failed start, circuit open) or WakeTimeout. With wake=False a
        sleeping guest raises WakeError at once (health checks must not wake)."""

    def activity(self) -> None:
        """Something passed through: push the idle deadline back."""

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """An open connection: the guest counts as busy until the context exits."""

    def progress(self) -> AsyncIterator[WakeProgress]:
        """The current progress, then every change, until ready or failed."""


class AlwaysReady:
    """The gate of a route without idle-watch: never wakes, never stops anything."""

    state = WakeState.READY
    wake_timeout_s = 0.0

    async def ready(self, *, wake: bool = True) -> None:
        return None

    def activity(self) -> None:
        return None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        yield

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(WakeState.READY, "ready")


# The one gate of every route without idle-watch (it holds no state).
ALWAYS_READY = AlwaysReady()
