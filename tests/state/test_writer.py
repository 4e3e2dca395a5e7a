"""The state writer: saves what changed, activity at most every interval, stops on failure."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from pxproxy.state.memory_store import MemoryStore
from pxproxy.state.store import SavedState, SeenGuest, Sleep, StateChanges, StateError
from pxproxy.state.writer import StateWriter


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Source:
    state: SavedState = field(default_factory=SavedState)

    def records(self) -> SavedState:
        return self.state


class FailingStore(MemoryStore):
    async def save(self, changes: StateChanges) -> None:
        self.saves += 1
        raise StateError("/x/state.db", "attempt to write a readonly database")


async def test_only_changes_are_saved() -> None:
    store = MemoryStore()
    source = Source()
    writer = StateWriter(store, SavedState(), clock=Clock())
    writer.add_source(source)
    await writer.flush()
    assert store.saves == 0  # nothing changed
    source.state = SavedState(sleeps={"lab:qemu/1": Sleep("paused", 5.0)})
    await writer.flush()
    await writer.flush()
    assert store.saves == 1
    assert store.state.sleeps == {"lab:qemu/1": Sleep("paused", 5.0)}
    source.state = SavedState()
    await writer.flush()
    assert store.saves == 2
    assert store.state.sleeps == {}


async def test_activity_is_saved_at_most_every_interval() -> None:
    store = MemoryStore()
    clock = Clock()
    source = Source()
    writer = StateWriter(store, SavedState(), activity_interval_s=30, clock=clock)
    writer.add_source(source)
    for second in range(59):
        clock.now = 100.0 + second
        source.state = SavedState(activity={"wiki.test": 1000.0 + second})
        await writer.flush()
    # 59 seconds of requests: one save (at 30 s), not 59.
    assert store.saves == 1
    assert store.state.activity == {"wiki.test": 1030.0}
    await writer.stop()  # the last activity goes out on stop
    assert store.state.activity == {"wiki.test": 1058.0}


async def test_a_failing_store_is_warned_about_once_and_left_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    source = Source(SavedState(guests={"lab:qemu/3": SeenGuest("db", "qemu", ("10.0.0.3",))}))
    writer = StateWriter(store, SavedState(), clock=Clock())
    writer.add_source(source)
    with caplog.at_level(logging.WARNING):
        await writer.flush()
        source.state = SavedState()
        await writer.flush()
    assert store.saves == 1
    assert not writer.persistent
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "readonly database" in warnings[0].getMessage()


async def test_a_writer_never_started_saves_nothing_on_stop() -> None:
    """Start-up failed before every source was added: stopping must not delete the records
    the missing sources would have kept."""
    saved = SavedState(sleeps={"lab:qemu/1": Sleep("paused", 5.0)})
    store = MemoryStore()
    await store.save(StateChanges(sleeps={"lab:qemu/1": Sleep("paused", 5.0)}))
    before = store.saves
    writer = StateWriter(store, saved, clock=Clock())
    writer.add_source(Source())  # a source that knows nothing of the sleep
    await writer.stop()
    assert store.saves == before
    assert store.state.sleeps == {"lab:qemu/1": Sleep("paused", 5.0)}
