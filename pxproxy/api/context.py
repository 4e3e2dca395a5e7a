"""What API handlers read: the inventory and settings. Nothing here writes to the inventory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from ..config.models import Config
from ..inventory.model import Guest
from ..inventory.store import Inventory
from ..metrics import Metrics
from ..pve.client import PveClient
from ..pve.models import TaskStatus
from ..routing.hosts import RouteTable
from ..shutdown import Stopping
from ..streams.shell_runner import ShellRunner
from ..streams.stats import StatsHub
from ..wake.contract import Gate, WakeState
from .audit import AuditLog
from .auth import Principal, TokenAuthority

PRINCIPAL = web.RequestKey("principal", Principal)


class RouteWake(Protocol):
    """Idle-watch as the API sees it (`wake.manager.WakeManager` fits)."""

    def states(self) -> Sequence[tuple[int, WakeState]]:
        """(route index, wake state) of every route."""

    def gate_for(self, route_index: int) -> Gate: ...


class SentAction(Protocol):
    @property
    def upid(self) -> str: ...

    @property
    def joined_wake(self) -> bool:
        """The action joined a wake in flight: `upid` is that wake's own start."""


class PowerActions(Protocol):
    """The one power path (`wake.service.PowerService` fits): through idle-watch's waker
    when the guest has one, so idle-watch knows at once and the API sees the wake."""

    def serves(self, cluster: str) -> bool: ...

    async def act(self, guest: Guest, action: str) -> SentAction: ...

    async def wait(self, guest: Guest, upid: str, timeout_s: float) -> TaskStatus: ...


@dataclass(frozen=True, slots=True)
class ApiContext:
    config: Config
    inventory: Inventory
    metrics: Metrics
    authority: TokenAuthority
    loopback_listener: bool
    cluster_names: list[str]
    # Idle-watch: the wake state and gate of each route (None: no idle-watch in this app).
    wake: RouteWake | None = None
    # Power actions (None: not set up in this app, a 503).
    power: PowerActions | None = None
    # The Proxmox client of each cluster, by cluster name (streams and power actions).
    clients: Mapping[str, PveClient] = field(default_factory=dict)
    audit: AuditLog = field(default_factory=AuditLog)
    # The daemon's shell runner and stats hub (None: an app-level setup step provides them).
    shells: ShellRunner | None = None
    stats: StatsHub | None = None
    # Set when the daemon (or the app) begins to stop: long-lived streams end themselves.
    stopping: Stopping = field(default_factory=Stopping)
    # The same host → route table class the proxy uses, so ?host= decides as the proxy does.
    route_table: RouteTable = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "route_table", RouteTable(self.config.routes))
