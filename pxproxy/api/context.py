"""What API handlers read: the inventory and settings. Nothing here writes to the inventory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ..config.models import Config
from ..inventory.store import Inventory
from ..metrics import Metrics
from ..pve.client import PveClient
from ..routing.hosts import RouteTable
from ..shutdown import Stopping
from ..wake.contract import Gate, WakeState
from .audit import AuditLog
from .auth import Principal, TokenAuthority

PRINCIPAL = web.RequestKey("principal", Principal)


@dataclass(frozen=True, slots=True)
class ApiContext:
    config: Config
    inventory: Inventory
    metrics: Metrics
    authority: TokenAuthority
    loopback_listener: bool
    cluster_names: list[str]
    # Wake state by route index; routes without idle-watch are absent (always ready).
    route_states: Callable[[], Mapping[int, WakeState]] = dict
    # The idle-watch gate of a route index (POST .../wake); None before idle-watch runs.
    route_gate: Callable[[int], Gate | None] = field(default=lambda _index: None)
    # Tells idle-watch that the power API acted on a guest (guest ref, action), so that it
    # does not take the change for one made outside pxproxy.
    note_power_action: Callable[[str, str], None] = field(default=lambda _ref, _action: None)
    # The Proxmox client of each cluster, by cluster name (streams and power actions).
    clients: Mapping[str, PveClient] = field(default_factory=dict)
    audit: AuditLog = field(default_factory=AuditLog)
    # Set when the daemon (or the app) begins to stop: long-lived streams end themselves.
    stopping: Stopping = field(default_factory=Stopping)
    # The same host → route table class the proxy uses, so ?host= decides as the proxy does.
    route_table: RouteTable = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "route_table", RouteTable(self.config.routes))
