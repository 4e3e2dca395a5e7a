"""Whether the daemon's audit file still verifies, for the API (`GET /api/v1/audit`).

The whole file is verified (`verify`), in a worker thread so a long file never stalls the event
loop, one check at a time, and again only when the file changed since the last one: any number
of dashboards cost one verification per new record at most. Beyond what `audit verify` can tell,
the file's last line is compared with the last record the daemon wrote, so lines deleted from
the end (or the whole file swapped for an older copy) show as broken too.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from dataclasses import dataclass
from typing import Any, Literal

from .chain import START, ChainHead
from .chained_file import ChainedFile
from .verify import ChainBrokenError, Verified, verify

ChainState = Literal["ok", "broken", "unreadable", "unchained"]


@dataclass(frozen=True, slots=True)
class ChainStatus:
    state: ChainState
    file: str | None = None
    lines: int = 0
    # What the file's first line continues (seq 0: a new chain; more: a rotated file's).
    start: ChainHead = START
    head: ChainHead = START  # the file's last line
    error: str | None = None
    checked_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            # True: intact; False: broken; None: not known (no chained file, or unreadable).
            "verified": {"ok": True, "broken": False}.get(self.state),
            "file": self.file,
            "lines": self.lines,
            "continues_seq": self.start.seq,
            "head": {"seq": self.head.seq, "hash": self.head.hash},
            "error": self.error,
            "checked_at": round(self.checked_at, 3),
        }


UNCHAINED = ChainStatus(
    "unchained",
    error="audit.path is not set: records go to the pxproxy.audit log, without a hash chain",
)

_Key = tuple[int, int, int, int, ChainHead]


class ChainChecker:
    """The cached status of one audit file."""

    def __init__(self, file: ChainedFile) -> None:
        self._file = file
        self._lock = asyncio.Lock()
        self._key: _Key | None = None
        self._status: ChainStatus | None = None

    async def status(self) -> ChainStatus:
        async with self._lock:  # single-flight: waiters then find the cache fresh
            path = self._file.path
            written = self._file.head  # read on the loop, where records are appended
            try:
                st = os.stat(path)
            except OSError as exc:
                return self._unreadable(path, exc)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, written)
            if key == self._key and self._status is not None:
                return self._status
            try:
                result = await asyncio.to_thread(verify, [path])
            except ChainBrokenError as exc:
                status = ChainStatus("broken", path, error=str(exc), checked_at=time.time())
            except OSError as exc:
                return self._unreadable(path, exc)
            else:
                # Records appended meanwhile are the daemon's own: its head after the check
                # bounds what the file may hold.
                status = _against_daemon(path, result, written, self._file.head)
            self._key, self._status = key, status
            return status

    @staticmethod
    def _unreadable(path: str, exc: OSError) -> ChainStatus:
        return ChainStatus(
            "unreadable", path, error=f"cannot read {path}: {exc.strerror or exc}",
            checked_at=time.time(),
        )  # fmt: skip


def _against_daemon(
    path: str, result: Verified, before: ChainHead, after: ChainHead
) -> ChainStatus:
    """The verified file, judged against the last record the daemon wrote: `before` and
    `after` the check (records appended during it)."""
    now = time.time()
    fields: dict[str, Any] = {"lines": result.lines, "start": result.start, "head": result.head}
    head = result.head
    error: str | None = None
    if result.lines == 0:
        pass  # rotated, and not written to since
    elif head.seq < before.seq:
        error = (
            f"{path} ends at seq {head.seq}, but pxproxy wrote up to seq {before.seq}: "
            "lines were deleted from its end, or an older copy replaced it"
        )
    elif head.seq > after.seq:
        error = (
            f"{path} goes on to seq {head.seq}, but pxproxy wrote only up to seq {after.seq}: "
            "lines were added by someone else"
        )
    elif (head.seq == before.seq and head.hash != before.hash) or (
        head.seq == after.seq and head.hash != after.hash
    ):
        error = f"{path}: its last line (seq {head.seq}) is not the record pxproxy wrote"
    if error is not None:
        return ChainStatus("broken", path, error=error, checked_at=now, **fields)
    return ChainStatus("ok", path, checked_at=now, **fields)


_CHECKERS: weakref.WeakKeyDictionary[ChainedFile, ChainChecker] = weakref.WeakKeyDictionary()


async def chain_status(file: ChainedFile | None) -> ChainStatus:
    """The status of the daemon's audit file (None: no audit.path, nothing is chained)."""
    if file is None:
        return UNCHAINED
    checker = _CHECKERS.get(file)
    if checker is None:
        checker = _CHECKERS[file] = ChainChecker(file)
    return await checker.status()
