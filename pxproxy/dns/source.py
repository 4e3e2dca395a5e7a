"""What the responder reads from the daemon: a small protocol, so a test passes a fake and the
daemon an adapter over its inventory, route store, idle-watch and bound listeners."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..config.models import RouteConfig
from ..inventory.snapshot import Snapshot
from ..routing.endpoints import ProxyEndpoints
from ..routing.route_set import RouteSet
from ..wake.contract import Gate


class DnsSource(Protocol):
    @property
    def snapshot(self) -> Snapshot: ...

    @property
    def routes(self) -> RouteSet: ...

    @property
    def endpoints(self) -> ProxyEndpoints: ...

    def gate_for(self, route: RouteConfig) -> Gate: ...


class LiveSource:
    """A DnsSource over zero-argument readers (the daemon's inventory, RouteStore, ...)."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        routes: Callable[[], RouteSet],
        gate_for: Callable[[RouteConfig], Gate],
        endpoints: Callable[[], ProxyEndpoints],
    ) -> None:
        self._snapshot = snapshot
        self._routes = routes
        self._gate_for = gate_for
        self._endpoints = endpoints

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot()

    @property
    def routes(self) -> RouteSet:
        return self._routes()

    @property
    def endpoints(self) -> ProxyEndpoints:
        return self._endpoints()

    def gate_for(self, route: RouteConfig) -> Gate:
        return self._gate_for(route)
