"""Verification of audit files: the first line where the chain breaks, with what is wrong.

Several files are verified as one chain, oldest first (`audit.jsonl.2 audit.jsonl.1
audit.jsonl`): each file's first line must continue the previous file's last one. The first
file may itself continue an older chain (a rotated file): its first line's seq and prev are
then taken as given, and reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .chain import GENESIS, ChainedLine, ChainHead, NotARecordError, parse


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class ChainBrokenError(Exception):
    """The first broken line, and what is wrong with it."""

    def __init__(self, at: Position, problem: str) -> None:
        super().__init__(f"{at}: {problem}")
        self.at = at
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Verified:
    lines: int
    start: ChainHead  # what the first line continues: START for a new chain
    head: ChainHead  # the last line: compare it with the chain head the daemon logged


@dataclass(frozen=True, slots=True)
class _Seen:
    at: Position
    line: ChainedLine


def _lines(path: str) -> Iterator[tuple[Position, bytes]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            at = Position(path, number)
            if not raw.endswith(b"\n"):
                raise ChainBrokenError(at, "incomplete line (no newline at the end of the file)")
            yield at, raw[:-1]


def verify(paths: Iterable[str]) -> Verified:
    """Verify the files as one chain; raise ChainBrokenError at the first broken line and
    OSError when a file cannot be read."""
    chain = _Chain()
    for path in paths:
        for at, raw in _lines(path):
            try:
                line = parse(raw)
            except NotARecordError as exc:
                chain.suspect_before(at)
                raise ChainBrokenError(at, f"not an audit record: {exc}") from None
            chain.add(at, line)
    return chain.finish()


@dataclass(frozen=True, slots=True)
class _Suspect:
    """A line whose prev is not the hash of the line before, seq running on: either the line
    before was changed, or this line was inserted. The next line tells which."""

    before: _Seen
    line: _Seen


class _Chain:
    def __init__(self) -> None:
        self.start: ChainHead | None = None
        self.last: _Seen | None = None
        self.before_last: _Seen | None = None
        self.suspect: _Suspect | None = None
        self.count = 0

    def add(self, at: Position, line: ChainedLine) -> None:
        if self.suspect is not None:
            self._judge(self.suspect, line)
        if self.last is None:
            self.start = _check_first(at, line)
        else:
            self.suspect = _check_next(at, line, self.last, self.before_last)
        self.before_last, self.last = self.last, _Seen(at, line)
        self.count += 1

    def suspect_before(self, at: Position) -> None:
        """A line that is no record at `at`: a suspicion before it is the first break."""
        if self.suspect is not None:
            raise _changed(self.suspect, "")

    @staticmethod
    def _judge(suspect: _Suspect, following: ChainedLine) -> None:
        if following.seq == suspect.line.line.seq and following.prev == suspect.before.line.hash:
            raise ChainBrokenError(
                suspect.line.at,
                f"inserted: line {suspect.line.at.line + 1} continues the chain from the line "
                "before it",
            )
        raise _changed(suspect, "")

    def finish(self) -> Verified:
        if self.suspect is not None:
            raise _changed(self.suspect, f", or line {self.suspect.line.at.line} does not belong")
        if self.last is None or self.start is None:
            return Verified(0, ChainHead(0, GENESIS), ChainHead(0, GENESIS))
        return Verified(self.count, self.start, ChainHead(self.last.line.seq, self.last.line.hash))


def _changed(suspect: _Suspect, alternative: str) -> ChainBrokenError:
    return ChainBrokenError(
        suspect.before.at,
        f"changed after it was written: its SHA-256 is not the prev of line "
        f"{suspect.line.at.line}{alternative}",
    )


def _check_first(at: Position, line: ChainedLine) -> ChainHead:
    if line.seq == 1 and line.prev != GENESIS:
        raise ChainBrokenError(at, "seq 1 starts a chain, but prev is not the genesis value")
    return ChainHead(line.seq - 1, line.prev)


def _check_next(
    at: Position, line: ChainedLine, last: _Seen, before_last: _Seen | None
) -> _Suspect | None:
    across = "" if at.file == last.at.file else f" (continuing {last.at.file})"
    expected = last.line.seq + 1
    if line.seq != expected:
        if (
            before_last is not None
            and line.seq == before_last.line.seq + 1
            and line.prev == before_last.line.hash
        ):
            # This line continues the one before the last: the last does not belong.
            raise ChainBrokenError(
                last.at,
                f"inserted: line {at.line}{across} continues the chain from the line before",
            )
        why = (
            "a line is missing before it, or lines are out of order"
            if line.seq > expected
            else "a line was inserted before it, or lines are out of order"
        )
        raise ChainBrokenError(at, f"seq {line.seq} where {expected} was expected{across}: {why}")
    if line.prev != last.line.hash:
        if across:
            raise ChainBrokenError(
                at,
                f"prev is not the hash of the last line of {last.at.file}: that line was "
                "changed, or this file does not follow it",
            )
        return _Suspect(last, _Seen(at, line))
    return None
