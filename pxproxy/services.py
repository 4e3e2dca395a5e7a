"""The composition root's services: built in one place, started in order, stopped in reverse.

Per cluster (`ClusterServices`): the Proxmox client, the address resolver and the poller. Over
the clusters, from those clients: the power control, idle-watch (`WakeManager`, built at once:
route refs resolve lazily; its `idle.before_stop` commands go through the shell runner), the
one power path (`PowerService`), the shell runner and the stats hub. The daemon owns a
`Services`; handlers get these objects through the ApiContext.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .api.audit import AuditLog
from .config.models import ClusterConfig, Config
from .idle_commands import IdleCommands
from .inventory.address_policy import AddressPolicy
from .inventory.guest_notes import GuestNotes
from .inventory.ip_resolution import IpResolver
from .inventory.node_aliases import node_aliases
from .inventory.poller import ClusterPoller, PollSettings
from .inventory.store import Inventory
from .metrics import Metrics
from .pve.client import PveClient
from .routing.route_set import Declared
from .shutdown import cancel_and_wait
from .state.store import SavedState
from .streams.shell_runner import ShellRunner, StreamSettings, runner_for
from .streams.stats import StatsHub
from .wake.manager import WakeManager
from .wake.power import PvePowerControl
from .wake.service import PowerService

log = logging.getLogger(__name__)


def alias_sources(config: Config) -> list[tuple[str, str]]:
    """(guest ref, alias) pairs from `guests:` and from the first label of route hosts."""
    pairs = [(ref, a.lower()) for ref, extra in config.guests.items() for a in extra.aliases]
    for route in config.routes:
        for host in route.host or ():
            if not host.startswith("*."):
                pairs.append((route.guest, host.split(".", 1)[0].lower()))
    return pairs


@dataclass(frozen=True, slots=True)
class ClusterServices:
    """What one cluster runs on: its client, and the resolver and poller over it."""

    name: str
    config: ClusterConfig
    client: PveClient
    resolver: IpResolver
    poller: ClusterPoller
    notes: GuestNotes


def cluster_services(
    name: str,
    cluster: ClusterConfig,
    inventory: Inventory,
    config: Config,
    metrics: Metrics | None,
    clock: Callable[[], float] = time.monotonic,
) -> ClusterServices:
    client = PveClient(cluster)
    resolver = IpResolver(
        client,
        policy=AddressPolicy(cluster.ips),
        concurrency=cluster.resolve_concurrency,
        refresh_s=cluster.ip_refresh,
        clock=clock,
    )
    poller = ClusterPoller(
        name,
        client,
        resolver,
        inventory.publish,
        settings=PollSettings(cluster.poll_interval, cluster.backoff_max, cluster.node_refresh),
        extra_aliases=alias_sources(config),
        node_aliases=node_aliases(config.nodes, name),
        on_poll=metrics.on_poll if metrics else None,
        on_rejected=metrics.on_rejected if metrics else None,
        clock=clock,
    )
    notes = GuestNotes(name, client, refresh_s=cluster.notes_refresh, clock=clock)
    return ClusterServices(name, cluster, client, resolver, poller, notes)


def make_poller(
    name: str,
    cluster: ClusterConfig,
    inventory: Inventory,
    config: Config,
    metrics: Metrics | None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[ClusterPoller, PveClient]:
    """One cluster's poller and client alone (`pxproxy check`, tests, benches)."""
    services = cluster_services(name, cluster, inventory, config, metrics, clock)
    return services.poller, services.client


Step = tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]


class Services:
    """Every service of the daemon but its listeners. Built at once (raises
    DependencyCycleError for a depends_on cycle); `start()` runs them in order, `stop()`
    stops what started, in reverse, and leaves no task and no open session."""

    def __init__(
        self,
        config: Config,
        inventory: Inventory,
        metrics: Metrics | None,
        *,
        stream_settings: StreamSettings | None = None,
        on_declared: Callable[[str, tuple[Declared, ...]], None] | None = None,
        audit: Callable[[], AuditLog | None] = lambda: None,
    ) -> None:
        self._inventory = inventory
        self._on_declared = on_declared
        self.clusters = [
            cluster_services(name, cluster, inventory, config, metrics)
            for name, cluster in zip(config.cluster_names(), config.proxmox, strict=True)
        ]
        self.clients = {c.name: c.client for c in self.clusters}
        self.power_control = PvePowerControl(self.clients)
        self.shells: ShellRunner = runner_for(
            config.cluster_names(),
            config.proxmox,
            self.clients,
            stream_settings or StreamSettings(),
        )
        # idle.before_stop goes the way of POST /exec, audited as the API audits it.
        self.wake = WakeManager(
            config.routes,
            inventory,
            self.power_control,
            observer=metrics,
            commands=IdleCommands(self.shells, audit),
        )
        self.power = PowerService(self.power_control, self.wake)
        self.stats = StatsHub(self.clients)
        self._saved = SavedState()
        self._poll_tasks: list[asyncio.Task[None]] = []
        self._notes_tasks: list[asyncio.Task[None]] = []
        self._started: list[Step] = []
        # ("start" | "stop", service name), in the order it happened (logged at DEBUG too).
        self.trace: list[tuple[str, str]] = []

    def _steps(self) -> list[Step]:
        steps: list[Step] = []
        for cluster in self.clusters:
            steps.append((f"client:{cluster.name}", _nothing, cluster.client.close))
            steps.append(
                (f"poller:{cluster.name}", self._starter(cluster), self._stopper(cluster.name))
            )
        steps.append(("shells", _nothing, self.shells.close))
        steps.append(("stats", self.stats.start, self.stats.close))
        steps.append(("idle-watch", self._start_wake, self.wake.stop))
        if self._on_declared is not None:
            # After idle-watch: the routes guests declare get their wakers as they appear.
            for cluster in self.clusters:
                steps.append(
                    (f"notes:{cluster.name}", self._notes_starter(cluster), self._notes_stopper)
                )
        return steps

    async def start(self, saved: SavedState | None = None) -> None:
        """`saved`: what the last run left, for idle-watch (pxproxy/state/)."""
        self._saved = saved or SavedState()
        for step in self._steps():
            name, begin, _ = step
            await begin()
            self._started.append(step)
            self._note("start", name)

    async def stop(self) -> None:
        """Stop what started, in reverse; a service that was never started is still closed
        if it holds something (a client session opened by a call before start)."""
        started = {name for name, _, _ in self._started}
        for name, _, end in reversed(self._started):
            await end()
            self._note("stop", name)
        self._started.clear()
        for cluster in self.clusters:
            if f"client:{cluster.name}" not in started:
                await cluster.client.close()

    def _note(self, what: str, name: str) -> None:
        self.trace.append((what, name))
        log.debug("%s %s", "started" if what == "start" else "stopped", name)

    def _starter(self, cluster: ClusterServices) -> Callable[[], Awaitable[None]]:
        async def begin() -> None:
            task = asyncio.create_task(cluster.poller.run(), name=f"poll:{cluster.name}")
            self._poll_tasks.append(task)

        return begin

    def _stopper(self, name: str) -> Callable[[], Awaitable[None]]:
        async def end() -> None:
            for task in [t for t in self._poll_tasks if t.get_name() == f"poll:{name}"]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._poll_tasks.remove(task)

        return end

    def _notes_starter(self, cluster: ClusterServices) -> Callable[[], Awaitable[None]]:
        declared = self._on_declared
        assert declared is not None

        def changed() -> None:
            declared(cluster.name, cluster.notes.declared())

        async def begin() -> None:
            task = asyncio.create_task(
                cluster.notes.run(self._inventory, changed), name=f"notes:{cluster.name}"
            )
            self._notes_tasks.append(task)

        return begin

    async def _notes_stopper(self) -> None:
        # Every watcher at the first of their steps to stop: they only read and publish.
        tasks, self._notes_tasks = self._notes_tasks, []
        for task in tasks:
            await cancel_and_wait(task)

    async def _start_wake(self) -> None:
        await self.wake.start(self._saved, status=self.clients)


async def _nothing() -> None:
    return None
