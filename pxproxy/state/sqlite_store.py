"""The state in one SQLite file (stdlib sqlite3).

Every call runs in a worker thread (asyncio.to_thread), one at a time: the batches are tiny,
but an fsync on an SD card or a network filesystem can take a long while, and the event loop
must not wait for it. One table of (kind, key, JSON value) rows: a shape any shared key-value
store can take over. The file is created 0600 (its directory 0700): it names guests and routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .store import (
    SLEPT_VALUES,
    Circuit,
    SavedState,
    SeenGuest,
    Sleep,
    StateChanges,
    StateError,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# A second pxproxy holding the file locked: give up after this long rather than hang.
BUSY_TIMEOUT_S = 2.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

T = TypeVar("T")


def _sleep(value: Any) -> Sleep:
    how, at = value["how"], value["at"]
    if how not in SLEPT_VALUES:
        raise ValueError(f"unknown sleep {how!r}")
    return Sleep(how, float(at))


def _circuit(value: Any) -> Circuit:
    return Circuit(str(value["message"]), bool(value["timeout"]), float(value["until"]))


def _activity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("not a time")
    return float(value)


def _guest(value: Any) -> SeenGuest:
    ips = value["ips"]
    if not isinstance(ips, list) or not all(isinstance(ip, str) for ip in ips):
        raise ValueError("ips must be a list of strings")
    return SeenGuest(str(value["name"]), str(value["type"]), tuple(ips))


_DECODERS: dict[str, Callable[[Any], object]] = {
    "sleep": _sleep,
    "circuit": _circuit,
    "activity": _activity,
    "guest": _guest,
}


def _encode(value: object) -> str:
    if isinstance(value, Sleep):
        data: object = {"how": value.how, "at": value.at}
    elif isinstance(value, Circuit):
        data = {"message": value.message, "timeout": value.timeout, "until": value.until}
    elif isinstance(value, SeenGuest):
        data = {"name": value.name, "type": value.type, "ips": list(value.ips)}
    else:
        data = value
    return json.dumps(data, separators=(",", ":"))


def _rows(changes: StateChanges) -> Iterator[tuple[str, str, object | None]]:
    sections: tuple[tuple[str, Mapping[str, object | None]], ...] = (
        ("sleep", changes.sleeps),
        ("circuit", changes.circuits),
        ("activity", changes.activity),
        ("guest", changes.guests),
    )
    for kind, section in sections:
        for key, value in section.items():
            yield kind, key, value


def create_private(path: Path) -> None:
    """Create the directory (0700) and an empty file (0600) unless they exist."""
    if path.exists():
        return  # an existing file keeps its mode; a read-only one is found by the first write
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


class SqliteStore:
    """Open with `await SqliteStore.open(path)`; raises StateError when the file cannot be
    used (missing directory that cannot be made, not a database, corrupt, read-only)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return str(self._path)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        conn = await asyncio.to_thread(_connect, path)
        return cls(path, conn)

    async def load(self) -> SavedState:
        return await self._call(self._load)

    async def save(self, changes: StateChanges) -> None:
        if changes:
            await self._call(self._save, changes)

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        # One call at a time: to_thread may use a different worker thread for each.
        async with self._lock:
            if self._conn is None:
                raise StateError(self.where, "closed")
            work = asyncio.ensure_future(asyncio.to_thread(fn, self._conn, *args))
            try:
                # The lock is held until the thread is done with the connection, even when
                # the caller is cancelled: a second transaction must not start under it.
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await work
                raise
            except sqlite3.Error as exc:
                raise StateError(self.where, str(exc)) from exc

    def _load(self, conn: sqlite3.Connection) -> SavedState:
        found: dict[str, dict[str, object]] = {kind: {} for kind in _DECODERS}
        bad = 0
        for kind, key, text in conn.execute("SELECT kind, key, value FROM records"):
            decode = _DECODERS.get(kind)
            if decode is None:
                continue  # a kind from a newer pxproxy: not ours to judge
            try:
                found[kind][key] = decode(json.loads(text))
            except Exception:  # any record that does not decode (OverflowError, deep JSON...)
                bad += 1
        if bad:
            log.warning("state %s: %d unreadable records ignored", self.where, bad)
        return SavedState(
            sleeps=found["sleep"],  # type: ignore[arg-type]
            circuits=found["circuit"],  # type: ignore[arg-type]
            activity=found["activity"],  # type: ignore[arg-type]
            guests=found["guest"],  # type: ignore[arg-type]
        )

    @staticmethod
    def _save(conn: sqlite3.Connection, changes: StateChanges) -> None:
        with _transaction(conn):
            for kind, key, value in _rows(changes):
                if value is None:
                    conn.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?, ?, ?)",
                        (kind, key, _encode(value)),
                    )


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _connect(path: Path) -> sqlite3.Connection:
    where = str(path)
    try:
        create_private(path)
    except OSError as exc:
        raise StateError(where, f"cannot create it: {exc.strerror or exc}") from exc
    try:
        conn = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StateError(where, str(exc)) from exc
    try:
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StateError(where, f"corrupt: {check[0] if check else 'no answer'}")
        conn.executescript(_SCHEMA)
        # A write now, so a read-only file is found at start and not at the first save.
        with _transaction(conn):
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?), ('opened', ?)",
                (str(SCHEMA_VERSION), str(int(time.time()))),
            )
    except StateError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StateError(where, str(exc)) from exc
    return conn
