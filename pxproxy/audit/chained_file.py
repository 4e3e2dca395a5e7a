"""The audit file the daemon appends to, one chained line per record.

Each record is one `os.write` of a few hundred bytes to a file opened O_APPEND: it lands in the
page cache in microseconds, so it is done on the event loop. There is no fsync per record (that
would stall the loop for milliseconds on a disk); the file is fsynced when it is closed, and
otherwise the kernel writes it back within its usual delay (about 30 s on Linux). A crash of
the machine can lose that tail, which `audit verify` cannot tell from a deletion at the end.

Rotation from outside (logrotate): before each write the path is stat'ed; when it names a new
file (`create`, or a rename with no file yet) the daemon opens it and continues the chain from
the last hash it wrote, which it keeps in memory. A truncated file (`copytruncate`) needs
nothing: O_APPEND writes at its new end, and the chain continues just the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any

from .chain import START, ChainHead, NotARecordError, encode, head_after, line_hash

log = logging.getLogger(__name__)

MODE = 0o600
_READ_BLOCK = 8192


class AuditFileError(OSError):
    """The audit file cannot be opened or read; the message names the file."""


def last_line(path: str) -> bytes | None:
    """The last newline-terminated line of a file (without its newline), or None if it has
    none; a trailing incomplete line is skipped. Reads backwards, block by block."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        pos = end
        while pos > 0:
            step = min(_READ_BLOCK, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            newline = tail.rfind(b"\n")
            if newline < 0:
                continue
            # The line ending at `newline` starts after the newline before it.
            start = tail.rfind(b"\n", 0, newline)
            if start >= 0 or pos == 0:
                return tail[start + 1 : newline]
        return None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class ChainedFile:
    """Appends chained lines to `path`, continuing the chain of what is already there."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.head = self._head_on_disk()
        self._fd = -1
        self._identity = (0, 0)
        self._open()
        log.info(
            "audit file %s: %s",
            path,
            "a new chain"
            if self.head == START
            else f"continuing the chain at seq {self.head.seq}, hash {self.head.hash}",
        )

    def _head_on_disk(self) -> ChainHead:
        """The chain head of the existing file; of `path.1` (logrotate's rotated file) when
        the file is missing or empty; else a new chain."""
        for candidate in (self.path, f"{self.path}.1"):
            try:
                line = last_line(candidate)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise AuditFileError(f"cannot read {candidate}: {exc.strerror or exc}") from None
            if line is None:
                continue
            try:
                return head_after(line)
            except NotARecordError as exc:
                # Chain on from it anyway: verify reports the line; refusing to start would
                # leave the daemon without an audit trail at all.
                log.warning(
                    "audit file %s: its last line is %s; the chain goes on from its hash",
                    candidate,
                    exc,
                )
                return ChainHead(0, line_hash(line))
        return START

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        except OSError as exc:
            raise AuditFileError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077:
            log.warning(
                "audit file %s has mode %o: others may read it (pxproxy creates it 0600)",
                self.path,
                stat.S_IMODE(st.st_mode),
            )
        if st.st_size and not self._ends_with_newline(fd, st.st_size):
            # A write cut short (a crash): end that line, so ours stay whole. verify reports it.
            os.write(fd, b"\n")
        self._fd, self._identity = fd, _identity(st)

    @staticmethod
    def _ends_with_newline(fd: int, size: int) -> bool:
        return os.pread(fd, 1, size - 1) == b"\n"

    def _follow_rotation(self) -> None:
        try:
            current = _identity(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._identity:
            return
        os.close(self._fd)
        self._fd = -1
        self._open()
        log.info(
            "audit file %s was rotated: the new file continues the chain from %d:%s "
            "(for audit verify --continues)",
            self.path,
            self.head.seq,
            self.head.hash,
        )

    def append(self, fields: Mapping[str, Any]) -> None:
        """Write one record; raise OSError when it cannot be written (the head stays)."""
        if self._fd < 0:
            self._open()
        else:
            self._follow_rotation()
        line = encode(fields, self.head)
        data = line + b"\n"
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            # Part of the line may be in the file: close, so the next record reopens it and
            # `_open` ends the fragment with a newline instead of gluing a record onto it.
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd, self._identity = -1, (0, 0)
            raise
        self.head = ChainHead(self.head.seq + 1, line_hash(line))

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1
        log.info(
            "audit file %s closed at seq %d, last hash %s", self.path, self.head.seq, self.head.hash
        )
