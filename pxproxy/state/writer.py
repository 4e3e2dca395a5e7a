"""Keeps the store in step with the daemon: pulls the current records from their owners,
saves only what changed, in small batches.

Sleeps, circuits and guests' addresses are checked every second and saved when they change
(they change rarely: a wake, an idle stop, a DHCP lease). Activity changes on every request,
so it is saved at most every `activity_interval_s`, and once more on stop. A store that fails
gets one WARNING; the daemon goes on without persistence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from ..shutdown import cancel_and_wait
from .store import SavedState, StateChanges, StateError, StateStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
ACTIVITY_INTERVAL_S = 30.0
# Activity this close to the saved value is not worth a write.
ACTIVITY_SLACK_S = 1.0

V = TypeVar("V")


class StateSource(Protocol):
    """An owner of some of the state (idle-watch, the inventory). `records` fills the
    sections it owns, completely: a key it leaves out is deleted from the store."""

    def records(self) -> SavedState: ...


def _diff(old: Mapping[str, V], new: Mapping[str, V]) -> dict[str, V | None]:
    out: dict[str, V | None] = {k: v for k, v in new.items() if old.get(k) != v}
    out.update({k: None for k in old if k not in new})
    return out


def _merge(sources: list[StateSource]) -> SavedState:
    sleeps: dict[str, object] = {}
    circuits: dict[str, object] = {}
    activity: dict[str, float] = {}
    guests: dict[str, object] = {}
    for source in sources:
        r = source.records()
        sleeps.update(r.sleeps)
        circuits.update(r.circuits)
        activity.update(r.activity)
        guests.update(r.guests)
    return SavedState(sleeps, circuits, activity, guests)  # type: ignore[arg-type]


class StateWriter:
    def __init__(
        self,
        store: StateStore,
        saved: SavedState,
        *,
        activity_interval_s: float = ACTIVITY_INTERVAL_S,
        check_interval_s: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._written = saved
        self._sources: list[StateSource] = []
        self._saving = False
        self._activity_interval_s = activity_interval_s
        self._check_interval_s = check_interval_s
        self._clock = clock
        self._activity_saved_at = clock()
        self._failed = False
        self._task: asyncio.Task[None] | None = None
        self.saves = 0  # batches written

    @property
    def persistent(self) -> bool:
        return not self._failed

    def add_source(self, source: StateSource) -> None:
        self._sources.append(source)

    def start(self) -> None:
        if self._task is None:
            self._saving = True
            self._task = asyncio.create_task(self._run(), name="state-writer")

    async def stop(self) -> None:
        """Cancel the loop, then save what is left (activity included) and close the store."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._saving:
            # Never started nor flushed (start-up failed before every source was there): a
            # save now would delete the records of the sources that are missing.
            await self.flush(activity=True)
        with contextlib.suppress(StateError):
            await self._store.close()

    async def flush(self, *, activity: bool = False) -> None:
        """Save what changed since the last save; activity only when due or asked for."""
        self._saving = True  # the sources are all there: saving is on from now
        if self._failed or not self._sources:
            return
        current = _merge(self._sources)
        written = self._written
        activity_due = activity or (
            self._clock() - self._activity_saved_at >= self._activity_interval_s
        )
        activity_changes: dict[str, float | None] = {}
        saved_activity = dict(written.activity)
        if activity_due:
            activity_changes = {
                k: v
                for k, v in current.activity.items()
                if abs(written.activity.get(k, float("-inf")) - v) >= ACTIVITY_SLACK_S
            }
            activity_changes.update(
                {k: None for k in written.activity if k not in current.activity}
            )
            for k, v in activity_changes.items():
                if v is None:
                    saved_activity.pop(k, None)
                else:
                    saved_activity[k] = v
        changes = StateChanges(
            sleeps=_diff(written.sleeps, current.sleeps),
            circuits=_diff(written.circuits, current.circuits),
            activity=activity_changes,
            guests=_diff(written.guests, current.guests),
        )
        if not changes:
            return
        try:
            await self._store.save(changes)
        except StateError as exc:
            self._failed = True
            log.warning("%s; running without persistence from now on", exc)
            return
        self.saves += 1
        if activity_due:
            self._activity_saved_at = self._clock()
        self._written = SavedState(
            sleeps=dict(current.sleeps),
            circuits=dict(current.circuits),
            activity=saved_activity,
            guests=dict(current.guests),
        )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval_s)
            try:
                await self.flush()
            except Exception:  # a bug here must not end persistence silently
                log.exception("state: saving failed")
