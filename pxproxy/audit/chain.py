"""The hash chain of the audit file.

Each line is one JSON object (keys sorted, ASCII only, no spaces) that carries two fields of its
own: `seq`, its position in the chain counted from 1, and `prev`, the SHA-256 (hex) of the bytes
of the line before it, without its newline. The first line of a chain has `seq` 1 and `prev`
GENESIS; the first line of a rotated file continues from the previous file's last line. Editing,
inserting, deleting or reordering a line therefore breaks `prev` or `seq` at that line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")


class NotARecordError(ValueError):
    """A line that is not a chained audit record (not JSON, or no valid seq and prev)."""


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain stands: the last line's seq and hash. The next line gets seq + 1 and
    prev = hash."""

    seq: int
    hash: str


START = ChainHead(0, GENESIS)


@dataclass(frozen=True, slots=True)
class ChainedLine:
    seq: int
    prev: str
    hash: str  # of this line's bytes


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def encode(fields: Mapping[str, Any], head: ChainHead) -> bytes:
    """The line (without newline) that follows `head`. ASCII only: no raw control or Unicode
    line-separator characters can reach the file, so one record is always one line."""
    record = {**fields, "seq": head.seq + 1, "prev": head.hash}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return text.encode("ascii")


def parse(line: bytes) -> ChainedLine:
    """The chain fields of a line (without its newline)."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise NotARecordError("not a JSON line") from None
    if not isinstance(record, dict):
        raise NotARecordError("not a JSON object")
    seq, prev = record.get("seq"), record.get("prev")
    if type(seq) is not int or seq < 1:
        raise NotARecordError("no valid seq (a positive integer)")
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise NotARecordError("no valid prev (64 hex digits)")
    return ChainedLine(seq, prev, line_hash(line))


def head_after(line: bytes) -> ChainHead:
    """The head a chain has after `line`."""
    return ChainHead(parse(line).seq, line_hash(line))
