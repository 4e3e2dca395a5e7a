"""A webhook's `guests:` filter: which guests' events it sends. Cluster events always pass.

Unlike a token's allowlist this grants nothing, so a name or glob simply matches every guest
that has it (no uniqueness rule)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from ..config.allowlists import GuestEntry, parse_guest_entry
from .notices import Notice


class GuestFilter:
    def __init__(self, entries: Iterable[str]) -> None:
        self._entries: tuple[GuestEntry, ...] = tuple(parse_guest_entry(e) for e in entries)
        self.all = any(e.kind == "all" for e in self._entries)

    def admits(self, notice: Notice) -> bool:
        if notice.guest is None or self.all:
            return True
        return any(self._matches(entry, notice) for entry in self._entries)

    @staticmethod
    def _matches(entry: GuestEntry, notice: Notice) -> bool:
        vmid, name = notice.vmid, (notice.name or "").lower()
        if entry.kind == "cluster":
            return entry.cluster == notice.cluster and entry.vmid == vmid
        if entry.kind == "vmid":
            return entry.text == str(vmid)
        if entry.kind == "node":
            node, _, number = entry.text.partition("/")
            if node in ("lxc", "qemu"):
                return number == str(vmid)  # the type is not in the notice: the vmid decides
            return node == notice.node and number == str(vmid)
        if entry.kind == "name":
            return entry.text.lower() == name
        if entry.kind == "glob":
            pattern = entry.text.lower()
            return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(str(vmid), pattern)
        return False
