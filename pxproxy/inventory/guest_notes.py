"""Routes that guests tagged `pxproxy` declare in their notes, followed per cluster.

A tagged guest's config is read only when needed: on first sight, when its tags, status or
node change, and every `notes_refresh` seconds (spread per guest). Its notes are parsed only
when the config's digest changed. A failed read keeps the routes the guest had; a guest that
loses the tag or vanishes loses its routes. The result is one `Declared` per tagged guest,
which the daemon merges with the config's routes (routing/route_set.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..pve.errors import PveError
from ..routing.notes import NotesError, parse_notes
from ..routing.route_set import Declared, route_name
from .model import Guest, GuestType
from .snapshot import ClusterSnapshot, Snapshot
from .store import Inventory

log = logging.getLogger(__name__)

TAG = "pxproxy"
# How long run() waits for a new snapshot before looking again (polls normally come faster).
SNAPSHOT_WAIT_S = 3600.0


class ConfigSource(Protocol):
    """The narrow part of the Proxmox client the watcher needs (a test can fake it)."""

    async def guest_config(self, kind: GuestType, node: str, vmid: int) -> dict[str, object]: ...


def is_tagged(guest: Guest) -> bool:
    return any(tag.lower() == TAG for tag in guest.tags)


@dataclass(slots=True)
class _Seen:
    """What the watcher knows of one tagged guest."""

    tags: tuple[str, ...]
    status: str
    node: str
    due_at: float = 0.0
    # The digest of the config last parsed (or its description where there is no digest).
    parsed_from: object = None
    declared: Declared | None = None
    read_failing: bool = False


class NotesStats:
    __slots__ = ("parses", "read_failures", "reads", "snapshots")

    def __init__(self) -> None:
        self.snapshots = 0  # snapshots of the cluster run() followed
        self.reads = 0  # guest config reads attempted
        self.read_failures = 0
        self.parses = 0  # notes parsed (a changed digest)


class GuestNotes:
    """One cluster's tagged guests and what their notes declare."""

    def __init__(
        self,
        cluster: str,
        source: ConfigSource,
        *,
        refresh_s: float = 30.0,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self._source = source
        self._refresh_s = refresh_s
        self._sem = asyncio.Semaphore(concurrency)
        self._clock = clock
        self._seen: dict[int, _Seen] = {}
        self.stats = NotesStats()

    def declared(self) -> tuple[Declared, ...]:
        """One entry per tagged guest read at least once, by vmid."""
        return tuple(s.declared for _, s in sorted(self._seen.items()) if s.declared is not None)

    async def update(self, guests: Iterable[Guest]) -> bool:
        """Follow one snapshot of the cluster's guests; True when the declared set changed."""
        before = self.declared()
        tagged = {
            g.vmid: g
            for g in guests
            if g.cluster == self.cluster and is_tagged(g) and not g.template
        }
        for vmid in [v for v in self._seen if v not in tagged]:
            gone = self._seen.pop(vmid).declared
            if gone is not None and gone.routes:
                log.info(
                    "%s (%s) is no longer tagged %s or is gone: its %d notes route(s) removed",
                    gone.name,
                    gone.guest,
                    TAG,
                    len(gone.routes),
                )
        due = [g for g in tagged.values() if self._due(g)]
        if due:
            await asyncio.gather(*(self._refresh(g) for g in due))
        for guest in tagged.values():
            self._rename(guest)
        return self.declared() != before

    def _due(self, guest: Guest) -> bool:
        seen = self._seen.get(guest.vmid)
        if seen is None:
            self._seen[guest.vmid] = _Seen(guest.tags, guest.status, guest.node)
            return guest.status != "unknown"
        if guest.status == "unknown":
            return False  # its node is offline: keep what we knew, read when it is back
        changed = (guest.tags, guest.status, guest.node) != (seen.tags, seen.status, seen.node)
        seen.tags, seen.status, seen.node = guest.tags, guest.status, guest.node
        return changed or self._clock() >= seen.due_at

    def _rename(self, guest: Guest) -> None:
        """A renamed guest keeps its routes; only the name people read changes."""
        seen = self._seen[guest.vmid]
        if seen.declared is not None and seen.declared.name != guest.name:
            d = seen.declared
            seen.declared = Declared(d.guest, guest.name, d.routes, d.error)

    async def _refresh(self, guest: Guest) -> None:
        seen = self._seen[guest.vmid]
        ref = f"{self.cluster}:{guest.vmid}"
        seen.due_at = self._clock() + self._refresh_s * _spread(ref)
        async with self._sem:
            self.stats.reads += 1
            try:
                config = await self._source.guest_config(guest.type, guest.node, guest.vmid)
            except PveError as exc:
                self.stats.read_failures += 1
                if not seen.read_failing:
                    seen.read_failing = True
                    log.warning(
                        "cannot read the notes of %s (%s): %s; its routes stay as they were",
                        guest.name,
                        ref,
                        exc,
                    )
                return
        if seen.read_failing:
            seen.read_failing = False
            log.info("the notes of %s (%s) can be read again", guest.name, ref)
        description = config.get("description")
        text = description if isinstance(description, str) else ""
        digest = config.get("digest")
        source: object = digest if isinstance(digest, str) and digest else ("text", text)
        if seen.declared is not None and source == seen.parsed_from:
            return
        self.stats.parses += 1
        try:
            declared = Declared(ref, guest.name, parse_notes(text, ref))
        except NotesError as exc:
            # Nothing else changes: the routes of its last valid notes stay (a typo mid-edit
            # must not drop a route with open connections), with the error reported.
            kept = seen.declared.routes if seen.declared is not None else ()
            declared = Declared(ref, guest.name, kept, exc.message)
        _log_change(seen.declared, declared)
        seen.parsed_from, seen.declared = source, declared

    def _newer_than(self, seen: ClusterSnapshot | None) -> Callable[[Snapshot], bool]:
        def newer(snapshot: Snapshot) -> bool:
            current = snapshot.clusters.get(self.cluster)
            return current is not None and current is not seen

        return newer

    async def run(self, inventory: Inventory, on_change: Callable[[], None]) -> None:
        """Follow every new snapshot of the cluster; call on_change when the set changed.
        While the cluster's poll fails, nothing is read and every route stays."""
        last: ClusterSnapshot | None = None
        while True:
            try:
                snapshot = await inventory.wait_until(self._newer_than(last), SNAPSHOT_WAIT_S)
            except TimeoutError:
                continue
            cluster = snapshot.clusters[self.cluster]
            last = cluster
            self.stats.snapshots += 1
            if not cluster.ok:
                continue
            if await self.update(cluster.guests):
                try:
                    on_change()
                except Exception:  # a listener's bug must not end the watcher
                    log.exception("notes routes of %s: on_change failed", self.cluster)


def _log_change(old: Declared | None, new: Declared) -> None:
    if new.error is not None:
        if old is None or old.error != new.error:
            kept = "; its last valid routes stay" if new.routes else ""
            log.warning(
                "the notes of %s (%s) are invalid: %s%s", new.name, new.guest, new.error, kept
            )
        return
    old_routes = old.routes if old is not None else ()
    if new.routes == old_routes:
        if old is not None and old.error is not None:
            log.info("the notes of %s (%s) are valid again", new.name, new.guest)
        return
    if new.routes:
        verb = "declare" if not old_routes else "now declare"
        names = ", ".join(route_name(r) for r in new.routes)
        log.info("the notes of %s (%s) %s: %s", new.name, new.guest, verb, names)
    else:
        log.info("the notes of %s (%s) no longer declare routes", new.name, new.guest)


def _spread(key: str) -> float:
    """0.75..1.25, fixed per guest: refreshes spread over polls instead of bunching."""
    return 0.75 + (zlib.crc32(key.encode()) % 1000) / 2000
