"""The grammar of a token's allowlists: `api.tokens[].guests` entries and `paths` prefixes.

A guest entry is `*`, a guest ref (`cluster:vmid`, `node/vmid`, `lxc/101`, a vmid, a name) or a
glob over names and vmids (`web-*`). Only `cluster:vmid` names one guest by construction; every
other form is a claim that exactly one guest in all clusters has it, which the API checks at
request time (pxproxy/api/allowlist.py). Parsing here is purely textual.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

EntryKind = Literal["all", "cluster", "node", "vmid", "name", "glob"]

VMID_MIN, VMID_MAX = 100, 999_999_999
MAX_ENTRY = 255
GLOB_CHARS = frozenset("*?[")
# The ref grammar of Snapshot.lookup_ref: cluster and node labels hold no ':', '/' or space.
_LABEL = r"[^:/\s*?\[\]]+"
_DIGITS = r"[0-9]+"
_CLUSTER_RE = re.compile(rf"(?P<cluster>{_LABEL}):(?P<vmid>{_DIGITS})")
_NODE_RE = re.compile(rf"(?P<node>{_LABEL})/(?P<vmid>{_DIGITS})")
_FORMS = "'*', cluster:vmid (home:101), node/vmid (pve1/101), a vmid, a name or a name glob"


class GuestEntry(NamedTuple):
    """One parsed guest allowlist entry. `cluster`/`vmid` are set for `cluster:vmid`."""

    text: str
    kind: EntryKind
    cluster: str | None = None
    vmid: int | None = None

    @property
    def bound(self) -> bool:
        """True when the entry names one guest whatever the inventory holds."""
        return self.kind in ("all", "cluster")


def _vmid(text: str, entry: str) -> int:
    if text.startswith("0") or not VMID_MIN <= int(text) <= VMID_MAX:
        raise ValueError(
            f"{entry!r}: the vmid must be {VMID_MIN}..{VMID_MAX} without leading zeros"
        )
    return int(text)


def _printable(value: str, what: str) -> None:
    for i, char in enumerate(value):
        if not char.isprintable():
            raise ValueError(f"{what} {value[:80]!r} contains U+{ord(char):04X} at position {i}")


def parse_guest_entry(value: str) -> GuestEntry:
    """Parse one `guests:` entry; ValueError says what is wrong and which forms exist."""
    if not value:
        raise ValueError(f"an empty entry allows nothing; use {_FORMS}")
    _printable(value, "entry")
    if any(c.isspace() for c in value):
        raise ValueError(f"{value[:80]!r} contains white space; use {_FORMS}")
    if len(value) > MAX_ENTRY:
        raise ValueError(f"the entry is longer than {MAX_ENTRY} characters")
    if value == "*":
        return GuestEntry(value, "all")
    if m := _CLUSTER_RE.fullmatch(value):
        return GuestEntry(value, "cluster", m["cluster"], _vmid(m["vmid"], value))
    if m := _NODE_RE.fullmatch(value):
        return GuestEntry(value, "node", None, _vmid(m["vmid"], value))
    if ":" in value or "/" in value:
        glob = " (globs match names and vmids only)" if GLOB_CHARS & set(value) else ""
        raise ValueError(f"{value[:80]!r} is not a guest ref{glob}; use {_FORMS}")
    if value.isascii() and value.isdigit():
        return GuestEntry(value, "vmid", None, _vmid(value, value))
    if GLOB_CHARS & set(value):
        return GuestEntry(value, "glob")
    return GuestEntry(value, "name")


def check_guest_entry(value: str) -> str:
    """The pydantic validator of one entry: the text unchanged, or a ValueError."""
    parse_guest_entry(value)
    return value


def check_path_prefix(value: str) -> str:
    """A `paths:` entry: an absolute, normalised directory or file path, not a glob.

    Matching (streams/validation.py) is on path boundaries: `/var/log` allows `/var/log/x` but
    not `/var/logs-secret`, and a trailing `/` changes nothing but that `/var/log/` does not
    allow the directory itself. Requested paths are refused if they hold `.`/`..` segments or
    `//`, so a normalised prefix is all the comparison needs."""
    if not value:
        raise ValueError("an empty path allows nothing; give an absolute path like /var/log")
    _printable(value, "path")
    if not value.startswith("/"):
        raise ValueError(f"{value[:80]!r} must be an absolute path like /var/log")
    if "//" in value:
        raise ValueError(f"{value[:80]!r} must not contain '//'")
    if any(segment in (".", "..") for segment in value.split("/")):
        raise ValueError(f"{value[:80]!r} must not contain '.' or '..' segments")
    if GLOB_CHARS & set(value):
        raise ValueError(
            f"{value[:80]!r}: paths are prefixes, not globs; write the directory, like /var/log"
        )
    return value
