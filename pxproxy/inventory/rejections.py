"""What the poller does with rejected /cluster/resources entries: log them without flooding, and
decide when so many known guests would vanish that the last good snapshot is kept instead."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from .ingest import Rejection
from .model import Guest

log = logging.getLogger(__name__)

REPEAT_AFTER_S = 600.0  # the same entry and reason is logged again after this long
BURST = 20  # WARNING lines one cluster may log at once
REFILL_S = 30.0  # one more line allowed per this long, up to BURST
MAX_REMEMBERED = 4096  # (id, reason) pairs kept to suppress repeats; bounded memory


class RejectionLog:
    """One WARNING per rejected entry, naming its id and the reason, rate-limited twice over:
    the same id and reason at most once per REPEAT_AFTER_S, and a token bucket per cluster so a
    body of 10,000 bad entries logs BURST lines and a summary, not 10,000 lines."""

    def __init__(self, cluster: str, clock: Callable[[], float]) -> None:
        self._cluster = cluster
        self._clock = clock
        self._logged: dict[tuple[str, str], float] = {}
        self._tokens = float(BURST)
        self._refilled_at: float | None = None
        self._summary_at = float("-inf")
        self.suppressed = 0  # lines the bucket held back; they are logged once tokens return

    def report(self, rejected: Iterable[Rejection]) -> int:
        """Log what is due; returns the number of WARNING lines written."""
        now = self._clock()
        self._refill(now)
        written = held_back = 0
        for r in rejected:
            key = (r.id, r.reason)
            last = self._logged.get(key)
            if last is not None and now - last < REPEAT_AFTER_S:
                continue
            if self._tokens < 1.0:
                held_back += 1
                continue
            self._tokens -= 1.0
            self._remember(key, now)
            written += 1
            log.warning(
                "cluster %s: /cluster/resources entry %s rejected: %s",
                self._cluster,
                r.id,
                r.reason,
            )
        if held_back:
            self.suppressed += held_back
            if now - self._summary_at >= REPEAT_AFTER_S:
                self._summary_at = now
                written += 1
                log.warning(
                    "cluster %s: %d more /cluster/resources entries rejected, not logged one by "
                    "one (see pxproxy_poll_entries_rejected_total)",
                    self._cluster,
                    held_back,
                )
        return written

    def _refill(self, now: float) -> None:
        if self._refilled_at is not None:
            self._tokens = min(float(BURST), self._tokens + (now - self._refilled_at) / REFILL_S)
        self._refilled_at = now

    def _remember(self, key: tuple[str, str], now: float) -> None:
        if len(self._logged) >= MAX_REMEMBERED:
            self._logged = {k: t for k, t in self._logged.items() if now - t < REPEAT_AFTER_S}
            if len(self._logged) >= MAX_REMEMBERED:
                # All recent: forget the oldest. Worst case, one repeats early, still bucketed.
                del self._logged[next(iter(self._logged))]
        self._logged[key] = now


def lost_to_rejection(
    previous: Iterable[Guest], kept: Iterable[Guest], rejected: Iterable[Rejection]
) -> int:
    """How many of the previous guests are missing now because their entries were rejected.

    A previous guest counts when it is missing from `kept` and a rejected guest entry claims
    its vmid (from the entry's vmid or, failing that, its id "lxc/300"). A rejected entry that
    cannot be tied to any vmid (not an object, no type, no usable vmid or id) may be any guest:
    each explains one missing guest that no other rejection explains. Node entries never do.
    Guests that are simply absent, with no rejected entry for them, were deleted or moved out
    of the token's view: they do not count.
    """
    kept_vmids = {g.vmid for g in kept}
    missing = {g.vmid for g in previous} - kept_vmids
    if not missing:
        return 0
    claimed: set[int] = set()
    anonymous = 0
    for r in rejected:
        if r.entry == "node":
            continue
        if r.vmid is None:
            anonymous += 1
        else:
            claimed.add(r.vmid)
    named = len(missing & claimed)
    return named + min(len(missing) - named, anonymous)


def hold_reason(
    previous: tuple[Guest, ...], kept: Iterable[Guest], rejected: list[Rejection]
) -> str | None:
    """Why the last good snapshot should be kept, or None to publish the new one: when more
    than half of the previous snapshot's guests would vanish because of rejected entries."""
    if not rejected or not previous:
        return None
    lost = lost_to_rejection(previous, kept, rejected)
    if lost * 2 <= len(previous):
        return None
    first = rejected[0]
    return (
        f"{lost} of {len(previous)} guests would vanish because {len(rejected)} "
        f"/cluster/resources entries were rejected (first: {first.id}: {first.reason}); "
        "keeping the last good inventory"
    )


def unanchored_reason(kept: Sequence[Guest], rejected: list[Rejection]) -> str | None:
    """With no good snapshot to keep (the first poll), why the partial one is degraded: when
    more than half of the guest entries in the body were rejected."""
    bad = [r for r in rejected if r.entry != "node"]
    if len(bad) <= len(kept):
        return None
    return (
        f"{len(bad)} of {len(bad) + len(kept)} guest entries in /cluster/resources were "
        f"rejected (first: {bad[0].id}: {bad[0].reason}); no earlier inventory to keep"
    )
