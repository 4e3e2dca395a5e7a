"""What survives a restart, and the narrow interface of the store that keeps it.

The records are small and keyed by stable names (a guest as `cluster:type/vmid`, a route by
its first host or its listen address), so a shared store (one for several replicas) can back
the same interface later: `load` everything once at start, `save` batches of upserts and
deletes. Times are wall-clock epoch seconds: monotonic clocks do not survive a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

# How pxproxy put a guest to sleep, which decides how it is woken (resume or start).
Slept = Literal["stopped", "paused", "suspended", "hibernated"]
SLEPT_VALUES: tuple[Slept, ...] = ("stopped", "paused", "suspended", "hibernated")


class StateError(Exception):
    """The store cannot be read or written; `where` names it (a path, or "memory")."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"state store {where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Sleep:
    """pxproxy put the guest to sleep, this way, at this time."""

    how: Slept
    at: float


@dataclass(frozen=True, slots=True)
class Circuit:
    """A failed wake: requests get `message` at once until `until`."""

    message: str
    timeout: bool
    until: float


@dataclass(frozen=True, slots=True)
class SeenGuest:
    """A guest's name, type and addresses as last seen."""

    name: str
    type: str
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SavedState:
    """Everything the store holds. Guest keys: `cluster:type/vmid`; route keys: route_key()."""

    sleeps: Mapping[str, Sleep] = field(default_factory=dict)
    circuits: Mapping[str, Circuit] = field(default_factory=dict)
    activity: Mapping[str, float] = field(default_factory=dict)
    guests: Mapping[str, SeenGuest] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateChanges:
    """One batch to save: a value upserts its key, None deletes it."""

    sleeps: Mapping[str, Sleep | None] = field(default_factory=dict)
    circuits: Mapping[str, Circuit | None] = field(default_factory=dict)
    activity: Mapping[str, float | None] = field(default_factory=dict)
    guests: Mapping[str, SeenGuest | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.sleeps or self.circuits or self.activity or self.guests)


class StateStore(Protocol):
    """Where the state lives. Calls may block on I/O in their implementation but never on the
    event loop; they raise StateError when the store cannot do what was asked."""

    @property
    def where(self) -> str:
        """How logs name the store: its path, or "memory"."""

    async def load(self) -> SavedState: ...

    async def save(self, changes: StateChanges) -> None:
        """Apply one batch atomically: all of it or none."""

    async def close(self) -> None: ...


def guest_key(cluster: str, guest_id: str) -> str:
    """The store's name for a guest: `home:qemu/101` (vmids are unique per cluster only)."""
    return f"{cluster}:{guest_id}"
