"""Parsing of Proxmox task identifiers (UPIDs)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_HEX8_RE = re.compile(r"[0-9A-Fa-f]{8}")
# pstart grows to 9 digits once a node has been up for more than ~497 days.
_HEX8_9_RE = re.compile(r"[0-9A-Fa-f]{8,9}")
# Whitespace (incl. Unicode line separators), C0/C1 controls and DEL; the colon is the separator.
_BAD_CHAR_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_FORMAT_HINT = "expected UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:"
_FIELD_COUNT = 7


@dataclass(frozen=True, slots=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    raw: str


def _fail(text: str, reason: str) -> ValueError:
    shown = text if len(text) <= 120 else text[:120] + "..."
    return ValueError(f"invalid UPID {shown!r}: {reason} ({_FORMAT_HINT})")


def parse_upid(text: str) -> Upid:
    """Parse a UPID, raising ValueError that names the first problem found."""
    if not isinstance(text, str):
        raise ValueError(f"invalid UPID: expected a string, got {type(text).__name__}")
    if _BAD_CHAR_RE.search(text):
        raise _fail(text, "contains whitespace or control characters")
    if not text.startswith("UPID:"):
        raise _fail(text, "must start with 'UPID:'")
    if not text.endswith(":"):
        raise _fail(text, "missing trailing colon")
    fields = text[len("UPID:") : -1].split(":")
    if len(fields) != _FIELD_COUNT:
        raise _fail(text, f"has {len(fields)} fields instead of {_FIELD_COUNT}")
    node, pid, pstart, starttime, task_type, task_id, user = fields
    if not _NODE_RE.fullmatch(node):
        raise _fail(text, f"bad node name {node!r}")
    if not _HEX8_RE.fullmatch(pid):
        raise _fail(text, f"pid {pid!r} is not 8 hex digits")
    if not _HEX8_9_RE.fullmatch(pstart):
        raise _fail(text, f"pstart {pstart!r} is not 8-9 hex digits")
    if not _HEX8_RE.fullmatch(starttime):
        raise _fail(text, f"starttime {starttime!r} is not 8 hex digits")
    if not task_type:
        raise _fail(text, "empty task type")
    if not user:
        raise _fail(text, "empty user")
    return Upid(
        node=node,
        pid=int(pid, 16),
        pstart=int(pstart, 16),
        starttime=int(starttime, 16),
        type=task_type,
        id=task_id,
        user=user,
        raw=text,
    )
