"""What API handlers read: the inventory and settings. Nothing here writes to the inventory."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from ..config.models import Config, RouteConfig
from ..events.hub import EventHub
from ..inventory.model import Guest
from ..inventory.store import Inventory
from ..metrics import Metrics
from ..pve.client import PveClient
from ..pve.models import TaskStatus
from ..reload import ConfigStatus
from ..routing.endpoints import ProxyEndpoints
from ..routing.hosts import RouteTable
from ..routing.route_set import RouteStore
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
        """(position in the current route set, wake state) of every route."""

    def gate_for(self, route: RouteConfig | int) -> Gate: ...


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
    # The live route set (config and guests' notes), the one the proxy routes by.
    routes: RouteStore = field(default_factory=RouteStore)
    # Where other proxies reach pxproxy's proxy listeners now (the bound ports).
    endpoints: Callable[[], ProxyEndpoints] = ProxyEndpoints
    # A failed reload, unbound listeners, keys waiting for a restart (shown in /health).
    config_status: Callable[[], ConfigStatus] = ConfigStatus
    # The proxy worker processes (proxy.workers), as /health shows them; None: no workers.
    proxy_workers: Callable[[], list[dict[str, Any]]] | None = None
    # Each webhook's delivery status, as GET /api/v1/webhooks shows it (none configured: []).
    webhooks: Callable[[], list[dict[str, Any]]] = list
    # The daemon's one event hub, read by GET /api/v1/events.
    events: EventHub = field(default_factory=EventHub)
    # The activity source of a route and its last reading, as /api/v1/routes shows it.
    activity_of: Callable[[RouteConfig], dict[str, Any]] = lambda route: {
        "source": route.activity.source
    }

    def __post_init__(self) -> None:
        if self.config.routes and not self.routes.current.routes:
            self.routes.publish(self.config.routes, ())

    @property
    def route_table(self) -> RouteTable:
        """The same host → route table the proxy uses, so ?host= decides as the proxy does."""
        return self.routes.current.table


class ContextCell:
    """The app's one mutable slot: a reload swaps in a new ApiContext (tokens, allowlists,
    settings); a request in flight keeps the one it began with."""

    __slots__ = ("ctx",)

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
