"""A guest's own traffic: growth of its cumulative `netin + netout` counters between two
polls. Transport-free.

Proxmox resets the counters when the guest restarts (a new QEMU or LXC process) and shows 0
while it is stopped; pvestatd refreshes them about every 10 s, so several polls in a row may
show no growth and the next one all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...inventory.model import Guest
from ...state.store import guest_key


@dataclass(frozen=True, slots=True)
class _Seen:
    total: int
    uptime: int


class TrafficCounters:
    """The last counters seen per guest (`cluster:id`)."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self.resets = 0  # counters that went backwards (a restart), for tests and insight

    def growth(self, guest: Guest) -> int | None:
        """Bytes in and out since the previous call for this guest; None when there is no
        previous figure to compare with (first sight, a restart, not running)."""
        key = guest_key(guest.cluster, guest.id)
        if guest.last_known:
            return None  # node offline: the figures are not fresh; keep the old baseline
        if guest.status != "running":
            self._seen.pop(key, None)
            return None
        now = _Seen(guest.netin + guest.netout, guest.uptime)
        before = self._seen.get(key)
        self._seen[key] = now
        if before is None:
            return None
        if now.total < before.total or now.uptime < before.uptime:
            self.resets += 1  # restarted since: a new baseline
            return None
        return now.total - before.total

    def keep_only(self, keys: set[str]) -> None:
        """Forget guests no longer watched (their routes were removed)."""
        for key in [k for k in self._seen if k not in keys]:
            del self._seen[key]
