"""The SQLite state store: round trips, deletions, bad files, permissions."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from pxproxy.config.models import StateConfig
from pxproxy.state.memory_store import MemoryStore
from pxproxy.state.opening import open_store, state_path
from pxproxy.state.sqlite_store import SqliteStore
from pxproxy.state.store import Circuit, SavedState, SeenGuest, Sleep, StateChanges, StateError

SAVED = SavedState(
    sleeps={"lab:qemu/1": Sleep("paused", 1000.5)},
    circuits={"lab:lxc/2": Circuit("startup failed", False, 2000.0)},
    activity={"wiki.example.com": 1500.25},
    guests={"lab:qemu/3": SeenGuest("db", "qemu", ("10.0.0.3", "fd00::3"))},
)
FULL = StateChanges(
    sleeps=dict(SAVED.sleeps),
    circuits=dict(SAVED.circuits),
    activity=dict(SAVED.activity),
    guests=dict(SAVED.guests),
)


async def test_what_is_saved_is_loaded_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    await store.save(FULL)
    await store.close()
    again = await SqliteStore.open(path)
    loaded = await again.load()
    await again.close()
    assert loaded == SAVED


async def test_none_deletes_and_other_keys_stay(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    await store.save(FULL)
    await store.save(StateChanges(sleeps={"lab:qemu/1": None}, activity={"gone": None}))
    loaded = await store.load()
    await store.close()
    assert loaded.sleeps == {}
    assert loaded.circuits == FULL.circuits
    assert loaded.activity == FULL.activity


async def test_file_is_private_and_its_directory_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    store = await SqliteStore.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_garbage_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(StateError, match="not a database"):
        await SqliteStore.open(path)
    assert len(path.read_bytes()) == 4096  # left as it was, for the operator to look at


async def test_a_directory_that_cannot_be_made_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StateError, match="cannot create it"):
        await SqliteStore.open(tmp_path / "file" / "state.db")


async def test_unreadable_records_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    path = tmp_path / "state.db"
    store = await SqliteStore.open(path)
    await store.save(FULL)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute('UPDATE records SET value = \'{"how": "melted", "at": 1}\' WHERE kind = \'sleep\'')
    conn.execute("INSERT INTO records VALUES ('activity', 'x.test', 'not json')")
    conn.commit()
    conn.close()
    store = await SqliteStore.open(path)
    with caplog.at_level(logging.WARNING):
        loaded = await store.load()
    await store.close()
    assert loaded.sleeps == {}
    assert loaded.activity == FULL.activity
    assert "2 unreadable records ignored" in caplog.text


async def test_open_store_falls_back_to_memory_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"\x00garbage" * 100)
    with caplog.at_level(logging.WARNING):
        store = await open_store(StateConfig(path=str(path)))
    assert isinstance(store, MemoryStore)
    assert f"state store {path}: file is not a database" in caplog.text
    assert "running without persistence" in caplog.text


async def test_disabled_means_memory(tmp_path: Path) -> None:
    store = await open_store(StateConfig(enabled=False, path=str(tmp_path / "never.db")))
    assert isinstance(store, MemoryStore)
    assert not (tmp_path / "never.db").exists()


def test_default_path_is_the_users_state_dir_without_var_lib(private_state_dir: Path) -> None:
    assert state_path(StateConfig()) == private_state_dir / "state.db"


def test_default_path_is_var_lib_where_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "var-lib-pxproxy"
    system.mkdir()
    monkeypatch.setattr("pxproxy.state.opening.SYSTEM_STATE_DIR", system)
    assert state_path(StateConfig()) == system / "state.db"
    assert state_path(StateConfig(path="~/x.db")) == Path.home() / "x.db"
