"""A token's guest allowlist, decided against the inventory at request time.

Each entry allows at most one guest. `*` allows all and `cluster:vmid` exactly that guest. Every
other form (a name, a vmid, `node/vmid`, `lxc/101`, a glob over names and vmids) allows a guest
only while that guest is the one and only match in all clusters: a Proxmox user who can rename a
guest, or create one in another cluster, must not be able to pull it into a token's reach. An
entry that matches several guests allows none of them, and says so (a rate-limited WARNING and
the refusal's reason, which the handlers write to the audit log).
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..config.allowlists import GuestEntry, parse_guest_entry
from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot

log = logging.getLogger(__name__)

WARN_INTERVAL_S = 60.0
MAX_WARN_KEYS = 256


@dataclass(frozen=True, slots=True)
class Unresolved:
    """Why an entry that matches the guest does not allow it."""

    entry: str
    refs: tuple[str, ...] = ()  # every guest the entry matches (ambiguous)
    missing: tuple[str, ...] = ()  # clusters without a successful poll yet

    def __str__(self) -> str:
        """The full reason, with every guest ref: for the audit log and the daemon log."""
        if self.missing:
            return (
                f"allowlist entry {self.entry!r} cannot be proven unique before cluster(s) "
                f"{', '.join(self.missing)} have been polled"
            )
        return f"ambiguous allowlist entry {self.entry!r} matches {', '.join(self.refs)}"

    @property
    def public(self) -> str:
        """What the client is told: the rule, not the other clusters' guests."""
        if self.missing:
            return f"allowlist entry {self.entry!r} cannot be proven unique yet"
        return (
            f"allowlist entry {self.entry!r} matches {len(self.refs)} guests, so it allows none; "
            "use cluster:vmid"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    unresolved: tuple[Unresolved, ...] = ()


ALLOWED = Decision(True)


def _same(a: Guest, b: Guest) -> bool:
    return a.cluster == b.cluster and a.vmid == b.vmid


class _WarnLimiter:
    """At most one WARNING per distinct message per interval; counts what it held back."""

    def __init__(self, clock: Callable[[], float], interval_s: float) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}  # message -> (logged at, held back)

    def warn(self, message: str) -> None:
        now = self._clock()
        seen = self._last.get(message)
        if seen is not None and now - seen[0] < self._interval_s:
            self._last[message] = (seen[0], seen[1] + 1)
            return
        if seen is None and len(self._last) >= MAX_WARN_KEYS:
            # Bounded: forget the oldest message (a flood of distinct ones stays bounded too).
            del self._last[min(self._last, key=lambda k: self._last[k][0])]
        held = f" ({seen[1]} more since the last warning)" if seen and seen[1] else ""
        self._last[message] = (now, 0)
        log.warning("%s%s", message, held)


class GuestAllowlist:
    """The parsed entries of one token, with the cache of its globs for the latest snapshot."""

    def __init__(
        self,
        token: str,
        entries: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        warn_interval_s: float = WARN_INTERVAL_S,
    ) -> None:
        self.token = token
        self.entries: tuple[GuestEntry, ...] = tuple(parse_guest_entry(e) for e in entries)
        self.all = any(e.kind == "all" for e in self.entries)
        self._limiter = _WarnLimiter(clock, warn_interval_s)
        self._glob_view: Snapshot | None = None
        self._glob_found: dict[str, tuple[Guest, ...]] = {}

    def decide(self, guest: Guest, snapshot: Snapshot, clusters: Sequence[str]) -> Decision:
        """Whether the token may act on `guest`, judged against `snapshot`. `clusters`: every
        configured cluster, so that one not yet polled cannot hide a second match.
        Refusals because of an ambiguous entry log a WARNING (rate-limited)."""
        if self.all:
            return ALLOWED
        unresolved: list[Unresolved] = []
        missing: tuple[str, ...] | None = None
        for entry in self.entries:
            if entry.kind == "cluster":
                if entry.cluster == guest.cluster and entry.vmid == guest.vmid:
                    return ALLOWED
                continue
            found = self._resolve(entry, snapshot)
            if not any(_same(g, guest) for g in found):
                continue
            if missing is None:
                missing = _unpolled(snapshot, clusters)
            if missing:
                unresolved.append(Unresolved(entry.text, missing=missing))
            elif len(found) == 1:
                return ALLOWED
            else:
                unresolved.append(Unresolved(entry.text, refs=tuple(g.ref for g in found)))
        for reason in unresolved:
            self._limiter.warn(
                f"token {self.token!r} refused on {guest.ref}: {reason}; "
                "an entry allows a guest only while it matches no other (use cluster:vmid)"
            )
        return Decision(False, tuple(unresolved))

    def _resolve(self, entry: GuestEntry, snapshot: Snapshot) -> tuple[Guest, ...]:
        if entry.kind != "glob":
            return matches(entry, snapshot)
        # A glob reads every guest: once per snapshot, not once per request.
        if self._glob_view is not snapshot:
            self._glob_view, self._glob_found = snapshot, {}
        found = self._glob_found.get(entry.text)
        if found is None:
            found = self._glob_found[entry.text] = matches(entry, snapshot)
        return found


def matches(entry: GuestEntry, snapshot: Snapshot) -> tuple[Guest, ...]:
    """Every guest in `snapshot` the entry names (`*`: all of them)."""
    if entry.kind == "all":
        return snapshot.guests
    if entry.kind != "glob":
        return snapshot.lookup_ref(entry.text).guests
    pattern = entry.text.lower()
    return tuple(
        g
        for g in snapshot.guests
        if fnmatch.fnmatchcase(g.name.lower(), pattern) or fnmatch.fnmatchcase(str(g.vmid), pattern)
    )


def _unpolled(snapshot: Snapshot, clusters: Sequence[str]) -> tuple[str, ...]:
    return tuple(
        name
        for name in clusters
        if (c := snapshot.clusters.get(name)) is None or c.last_success is None
    )
