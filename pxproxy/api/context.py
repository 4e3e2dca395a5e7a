"""What API handlers read: the inventory and settings. Nothing here writes to the inventory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ..config.models import Config
from ..inventory.store import Inventory
from ..metrics import Metrics
from ..pve.client import PveClient
from ..shutdown import Stopping
from ..wake.contract import WakeState
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
    # The Proxmox client of each cluster, by cluster name (streams and power actions).
    clients: Mapping[str, PveClient] = field(default_factory=dict)
    audit: AuditLog = field(default_factory=AuditLog)
    # Set when the daemon (or the app) begins to stop: long-lived streams end themselves.
    stopping: Stopping = field(default_factory=Stopping)
