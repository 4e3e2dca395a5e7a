"""A store that keeps the state in memory: for tests, and for running without persistence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .store import SavedState, StateChanges

V = TypeVar("V")


def _apply(current: Mapping[str, V], changes: Mapping[str, V | None]) -> dict[str, V]:
    out = dict(current)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def apply_changes(state: SavedState, changes: StateChanges) -> SavedState:
    """`state` with `changes` applied."""
    return SavedState(
        sleeps=_apply(state.sleeps, changes.sleeps),
        circuits=_apply(state.circuits, changes.circuits),
        activity=_apply(state.activity, changes.activity),
        guests=_apply(state.guests, changes.guests),
    )


class MemoryStore:
    def __init__(self, initial: SavedState | None = None) -> None:
        self.state = initial or SavedState()
        self.saves = 0  # batches saved: lets a test count writes

    @property
    def where(self) -> str:
        return "memory"

    async def load(self) -> SavedState:
        return self.state

    async def save(self, changes: StateChanges) -> None:
        self.state = apply_changes(self.state, changes)
        self.saves += 1

    async def close(self) -> None:
        return None
