"""Query filters of the discovery endpoints: `?type=`, `?status=`, `?tag=`, each repeatable.
Values of one parameter are alternatives (any of them); different parameters must all hold.
A value that cannot be a type, status or tag is refused with the parameter's name."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..inventory.model import Guest

TYPES = ("lxc", "qemu")
# Proxmox statuses are lowercase words (running, stopped, paused, unknown, ...).
_STATUS_RE = re.compile(r"^[a-z]{1,32}$")
# Proxmox's tag syntax (pve-common's tag format), at most 128 characters.
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_+.-]{0,127}$")
PARAMETERS = ("type", "status", "tag")


class FilterError(ValueError):
    """A query parameter the filters refuse: `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True, slots=True)
class GuestFilters:
    types: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def admits(self, guest: Guest) -> bool:
        return (
            (not self.types or guest.type in self.types)
            and (not self.statuses or guest.status in self.statuses)
            and (not self.tags or not self.tags.isdisjoint(guest.tags))
        )


ALL_GUESTS = GuestFilters()


def parse_filters(items: Iterable[tuple[str, str]]) -> GuestFilters:
    """From the query's (name, value) pairs, in order; raises FilterError."""
    found: dict[str, set[str]] = {name: set() for name in PARAMETERS}
    for name, value in items:
        if name not in found:
            raise FilterError(
                name, f"unknown query parameter {name[:64]!r}; use {', '.join(PARAMETERS)}"
            )
        if name == "type" and value not in TYPES:
            raise FilterError(name, f"type must be lxc or qemu, not {value[:64]!r}")
        if name == "status" and not _STATUS_RE.match(value):
            raise FilterError(
                name, f"status must be a lowercase word such as running, not {value[:64]!r}"
            )
        if name == "tag" and not _TAG_RE.match(value):
            raise FilterError(
                name, f"tag {value[:64]!r} is not a Proxmox tag (letters, digits, _ + . -)"
            )
        found[name].add(value)
    return GuestFilters(
        frozenset(found["type"]), frozenset(found["status"]), frozenset(found["tag"])
    )
