"""Poll one cluster: node pool, resources every poll_interval, IP resolution; publish snapshots."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..pve.errors import PveError, PvePermissionError
from ..pve.models import ClusterStatus
from .ingest import NodeEntry, Rejection, make_nodes, parse_resources
from .ip_resolution import IpResolver
from .model import Guest
from .rejections import RejectionLog, hold_reason, unanchored_reason
from .snapshot import ClusterSnapshot, Snapshot

log = logging.getLogger(__name__)

JITTER = 0.2


class ClusterSource(Protocol):
    """What polling needs from the Proxmox client (a test can fake it)."""

    async def cluster_resources_raw(self, kind: str | None = None) -> bytes: ...

    async def cluster_status(self) -> ClusterStatus: ...


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval_s: float = 3.0
    backoff_max_s: float = 30.0
    node_refresh_s: float = 60.0


@dataclass(slots=True)
class PollStats:
    cycles: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    held: int = 0  # polls whose answer was refused (too many rejected entries)
    rejected: int = 0  # entries rejected, all polls together
    last_duration_s: float = 0.0
    durations: list[float] = field(default_factory=list)


class ClusterPoller:
    """Owns the polling of one cluster. Publishes through `publish`; never called back."""

    def __init__(
        self,
        name: str,
        client: ClusterSource,
        resolver: IpResolver,
        publish: Callable[[ClusterSnapshot], None],
        *,
        settings: PollSettings | None = None,
        extra_aliases: Sequence[tuple[str, str]] = (),
        node_aliases: Mapping[str, Sequence[str]] | None = None,
        on_poll: Callable[[str, float, bool], None] | None = None,
        on_rejected: Callable[[str, str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._client = client
        self._resolver = resolver
        self._publish = publish
        self._settings = settings or PollSettings()
        self._extra_aliases = tuple(extra_aliases)
        # Node name (lowercased) -> aliases from the config's `nodes:` (node_aliases.py).
        self._node_aliases = {k.lower(): tuple(v) for k, v in (node_aliases or {}).items()}
        self._on_poll = on_poll
        self._on_rejected = on_rejected  # (cluster, reason class, count) per poll
        self._clock = clock
        self._rejection_log = RejectionLog(name, clock)
        self._held: str | None = None  # why the cluster shows degraded, while it does
        self._status: ClusterStatus | None = None
        self._status_at = float("-inf")
        self._node_names: frozenset[str] = frozenset()
        self._status_warning: str | None = None
        self._last: ClusterSnapshot | None = None
        self.stats = PollStats()
        # Set once the first cycle ended (addresses resolved, or the poll failed), for callers
        # that want resolved addresses before they go on (tests); the daemon does not wait.
        self.first_cycle = asyncio.Event()

    def set_extra_aliases(self, pairs: Sequence[tuple[str, str]]) -> None:
        """New (guest ref, alias) pairs from a reloaded config: the next snapshot has them."""
        self._extra_aliases = tuple(pairs)

    @property
    def last(self) -> ClusterSnapshot | None:
        return self._last

    @property
    def resolver(self) -> IpResolver:
        return self._resolver

    async def run(self) -> None:
        """Poll until cancelled. Failures publish the last data marked stale and back off."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except (PveError, ValueError) as exc:
                self._failed(str(exc))
                delay = self._backoff_s()
            except Exception as exc:
                # A bug must not end polling for good: log it, serve stale, try again.
                log.exception("cluster %s: unexpected error while polling", self.name)
                self._failed(f"internal error: {type(exc).__name__}: {exc}")
                delay = self._backoff_s()
            else:
                delay = max(0.0, self._settings.interval_s - (loop.time() - started))
            self.first_cycle.set()
            await asyncio.sleep(delay)

    def _backoff_s(self) -> float:
        n = self.stats.consecutive_failures
        base = min(self._settings.interval_s * 2 ** (n - 1), self._settings.backoff_max_s)
        return float(base * random.uniform(1 - JITTER, 1 + JITTER))

    def _failed(self, error: str) -> None:
        self.stats.failures += 1
        self.stats.consecutive_failures += 1
        if self.stats.consecutive_failures == 1:
            log.warning("cluster %s: poll failed: %s", self.name, error)
        if self._on_poll:
            self._on_poll(self.name, 0.0, False)
        if self._last is not None:
            self._publish(self._last.failed(error))
        else:
            self._publish(ClusterSnapshot(self.name, (), (), ok=False, error=error))

    async def poll_once(self) -> ClusterSnapshot:
        """One cycle: resources (1 request), node pool when due, addresses for due guests."""
        t0 = time.perf_counter()
        body = await self._client.cluster_resources_raw()
        resources = parse_resources(body, self.name)
        if resources.rejected:
            self._count_rejected(resources.rejected)
        previous = self._last
        if previous is not None and (
            reason := hold_reason(previous.guests, resources.guests, resources.rejected)
        ):
            return self._hold(previous, reason)
        # No good snapshot to fall back on (first poll): publish what passed, flagged.
        partial = (
            unanchored_reason(resources.guests, resources.rejected) if previous is None else None
        )
        names = frozenset(n.name for n in resources.nodes)
        if names != self._node_names or self._clock() - self._status_at >= (
            self._settings.node_refresh_s
        ):
            await self._refresh_node_pool()
            self._node_names = names
        due = self._resolver.plan(resources.guests)
        snapshot = self._build(resources.guests, resources.nodes, resources.rejected, partial)
        self._publish(snapshot)
        if due and await self._resolver.resolve(due):
            snapshot = self._build(resources.guests, resources.nodes, resources.rejected, partial)
            self._publish(snapshot)
        if partial is None and self._held is not None:
            log.info(
                "cluster %s: recovered: /cluster/resources accepted again (%d guests, "
                "%d entries rejected)",
                self.name,
                len(snapshot.guests),
                len(resources.rejected),
            )
            self._held = None
        elif self.stats.consecutive_failures:
            log.info("cluster %s: polling recovered", self.name)
        self.stats.consecutive_failures = 0
        self.stats.cycles += 1
        self.stats.last_duration_s = time.perf_counter() - t0
        if self._on_poll:
            self._on_poll(self.name, self.stats.last_duration_s, True)
        return snapshot

    def _count_rejected(self, rejected: list[Rejection]) -> None:
        self.stats.rejected += len(rejected)
        self._rejection_log.report(rejected)
        if self._on_rejected:
            for kind, n in Counter(r.kind for r in rejected).items():
                self._on_rejected(self.name, kind, n)

    def _degraded(self, reason: str) -> None:
        if self._held is None:
            log.warning("cluster %s: degraded: %s", self.name, reason)
        self._held = reason

    def _hold(self, last: ClusterSnapshot, reason: str) -> ClusterSnapshot:
        """Keep serving `last`, marked degraded; polling goes on at the normal interval (Proxmox
        answered, so there is nothing to back off from)."""
        self._degraded(reason)
        self.stats.held += 1
        self.stats.consecutive_failures = 0
        snapshot = last.held(reason)
        self._publish(snapshot)
        if self._on_poll:
            self._on_poll(self.name, 0.0, False)  # no fresh data: a failed cycle for metrics
        return snapshot

    async def _refresh_node_pool(self) -> None:
        """Node IPs and the cluster name from /cluster/status. Not fatal: without Sys.Audit
        the guests still poll, and the health answer says what is missing."""
        try:
            self._status = await self._client.cluster_status()
            self._status_warning = None
            if not self._status.nodes:
                self._status_warning = (
                    "/cluster/status lists no nodes: the API user or token needs Sys.Audit on /"
                )
        except PvePermissionError as exc:
            self._status_warning = f"cannot read /cluster/status ({exc}): node IPs unknown"
        self._status_at = self._clock()

    def _build(
        self,
        raw_guests: list[Guest],
        node_entries: list[NodeEntry],
        rejected: Sequence[Rejection] = (),
        partial: str | None = None,
    ) -> ClusterSnapshot:
        """The snapshot of this poll, remembered as the last good one unless `partial` says
        most of it was rejected: then it is published marked degraded and not remembered, so
        it never becomes the baseline later polls are measured against."""
        resolver = self._resolver
        last = self._last.by_id if self._last is not None else {}
        guests = []
        for g in raw_guests:
            if g.status == "unknown" and not g.name and (known := last.get(g.id)) and known.name:
                g = _last_known(g, known)
            ips, source = resolver.addresses(g.id)
            guests.append(g._replace(ips=ips, ip_source=source) if ips else g)
        status = self._status
        node_ips = {n.name: n.ip for n in status.nodes} if status else {}
        nodes = make_nodes(self.name, node_entries, node_ips)
        if self._node_aliases:
            nodes = tuple(
                n._replace(aliases=aliases)
                if (aliases := self._node_aliases.get(n.name.lower()))
                else n
                for n in nodes
            )
        warnings = []
        if self._status_warning:
            warnings.append(self._status_warning)
        if not nodes and guests:
            warnings.append("no nodes visible: the API user or token needs Sys.Audit on /nodes")
        if rejected:
            first = rejected[0]
            warnings.append(
                f"{len(rejected)} /cluster/resources entries rejected (first: {first.id}: "
                f"{first.reason}); see the log"
            )
        snapshot = ClusterSnapshot.build(
            self.name,
            guests,
            nodes,
            pve_cluster_name=status.cluster_name if status else None,
            warnings=tuple(warnings),
        )
        if self._extra_aliases:
            snapshot = self._with_aliases(snapshot)
        if partial is not None:
            self._degraded(partial)
            return snapshot.held(partial)
        self._last = snapshot
        return snapshot

    def _with_aliases(self, snapshot: ClusterSnapshot) -> ClusterSnapshot:
        """Aliases from the config (`guests:` and route hosts), applied by guest ref."""
        view = Snapshot({self.name: snapshot})
        extra: dict[str, list[str]] = {}
        for ref, alias in self._extra_aliases:
            for g in view.lookup_ref(ref).guests:
                extra.setdefault(g.id, []).append(alias)
        if not extra:
            return snapshot
        guests = [
            g._replace(aliases=tuple(dict.fromkeys((*g.aliases, *extra[g.id]))))
            if g.id in extra
            else g
            for g in snapshot.guests
        ]
        return ClusterSnapshot.build(
            self.name,
            guests,
            snapshot.nodes,
            pve_cluster_name=snapshot.pve_cluster_name,
            warnings=snapshot.warnings,
            last_success=snapshot.last_success,
        )


def _last_known(entry: Guest, known: Guest) -> Guest:
    """A guest on an offline node: /cluster/resources sends only id, vmid, node, type and status
    "unknown", so the name, tags, aliases, template flag and pool of the last poll that had them
    are kept (and marked), and lookups by name go on finding it."""
    return entry._replace(
        name=known.name,
        tags=known.tags,
        aliases=known.aliases,
        template=known.template,
        pool=entry.pool or known.pool,
        last_known=True,
    )
