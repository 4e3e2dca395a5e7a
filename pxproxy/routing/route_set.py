"""The effective routes: the config's, then those guests declare in their notes, merged into
one immutable `RouteSet` that is swapped whole (like the inventory snapshot) on a reload or
when notes change. Readers hold on to one set for a consistent view.

Conflicts resolve deterministically: config routes win over declared ones; among declared
routes the guest with the lower `cluster:vmid` key wins. Every loser is a `RouteProblem`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..config.companion import NotesPolicy
from ..config.models import RouteConfig
from .hosts import RouteTable

Origin = Literal["config", "notes"]


def route_name(route: RouteConfig) -> str:
    """How logs and metrics name a route: its hosts, or `tcp:`/`udp:` and its listen address."""
    if route.host:
        return ",".join(route.host)
    return f"{route.protocol}:{route.listen}"


@functools.lru_cache(maxsize=1024)  # the proxy asks on every request
def upstream_prefix(path_prefix: str | None) -> str:
    """What a route's `path_prefix` puts before the request path upstream: "/app/" and
    "app" both become "/app"; "/" and None become "" (no prefix)."""
    stripped = (path_prefix or "").strip("/")
    return "/" + stripped if stripped else ""


@dataclass(frozen=True, slots=True)
class Route:
    config: RouteConfig
    origin: Origin = "config"
    # The guest whose notes declare the route ("cluster:vmid"); None for a config route.
    owner: str | None = None

    @property
    def name(self) -> str:
        return route_name(self.config)


@dataclass(frozen=True, slots=True)
class RouteProblem:
    """Why (part of) a guest's notes gave no route: shown in /api/v1/routes and logged."""

    guest: str  # "cluster:vmid"
    name: str  # the guest's name, for people
    error: str


@dataclass(frozen=True, slots=True)
class Declared:
    """What one tagged guest's notes declare: routes (ref already the guest), and an error
    when the notes are invalid now (the routes are then those of its last valid notes)."""

    guest: str  # "cluster:vmid"
    name: str
    routes: tuple[RouteConfig, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RouteSet:
    routes: tuple[Route, ...] = ()
    problems: tuple[RouteProblem, ...] = ()
    # Bumped on every publish, so a reader can tell two sets apart cheaply.
    version: int = 0
    table: RouteTable = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", RouteTable(r.config for r in self.routes))

    @property
    def configs(self) -> tuple[RouteConfig, ...]:
        return tuple(r.config for r in self.routes)

    def http(self) -> list[Route]:
        return [r for r in self.routes if r.config.host]

    def tcp(self) -> list[Route]:
        return [r for r in self.routes if r.config.listen and r.config.protocol == "tcp"]

    def udp(self) -> list[Route]:
        return [r for r in self.routes if r.config.listen and r.config.protocol == "udp"]


def _claims(route: RouteConfig) -> list[str]:
    if route.host:
        return [f"host {h.rstrip('.').lower()}" for h in route.host]
    # By port, whatever the address: a declared route may not take a port on another
    # address either (0.0.0.0 would clash with every one of them). TCP and UDP ports are
    # apart: a game's TCP and UDP routes may share a number.
    port = (route.listen or "").rsplit(":", 1)[-1]
    return [f"udp port {port}" if route.protocol == "udp" else f"port {port}"]


def _covering_wildcard(host: str, wildcards: Mapping[str, str]) -> str | None:
    """The config wildcard (`*.example.com`) that covers `host`, exact or wildcard itself."""
    name = host.rstrip(".").lower().removeprefix("*.")
    while "." in name:
        name = name.split(".", 1)[1]
        if name in wildcards:
            return wildcards[name]
    return None


def _refusal(route: RouteConfig, policy: NotesPolicy, wildcards: Mapping[str, str]) -> str | None:
    """Why a declared route may not be served, whatever other guests declare."""
    if route.listen is not None and route.protocol == "tcp" and not policy.tcp:
        return "TCP routes from notes are off (notes: {tcp: true} allows them)"
    if route.listen is not None and route.protocol == "udp" and not policy.udp:
        return "UDP routes from notes are off (notes: {udp: true} allows them)"
    for host in route.host or ():
        if not policy.allows_host(host):
            return f"host {host} is not allowed by notes.hosts ({', '.join(policy.hosts)})"
        covering = _covering_wildcard(host, wildcards)
        if covering is not None:
            return f"host {host} is covered by {covering}"
    return None


def _nested(route: RouteConfig, guest: str, theirs: Mapping[str, tuple[str, str]]) -> str | None:
    """A declared wildcard inside, or around, another guest's declared wildcard."""
    for host in route.host or ():
        if not host.startswith("*."):
            continue
        suffix = host.rstrip(".").lower()[2:]
        for other, (owner, who) in theirs.items():
            if owner != guest and (suffix.endswith("." + other) or other.endswith("." + suffix)):
                return f"host {host} overlaps *.{other} of {who}"
    return None


def merge(
    config_routes: Sequence[RouteConfig],
    declared: Iterable[Declared],
    version: int = 0,
    reserved: Mapping[int, str] | None = None,
    policy: NotesPolicy | None = None,
) -> RouteSet:
    """Config routes first, in config order; then each guest's declared routes, guests in
    `cluster:vmid` order. A declared route is dropped and reported when `policy` (the
    config's `notes:`) does not allow it, when a config wildcard covers its host, or when
    its host or listen port is taken (by a config route, an earlier guest, or one of
    pxproxy's own listeners in `reserved`); the guest's other routes stay. A guest whose
    notes became invalid keeps the routes of its last valid notes, and the error is
    reported."""
    policy = policy or NotesPolicy()
    routes = [Route(r) for r in config_routes]
    wildcards = {
        h.rstrip(".").lower()[2:]: f"config route {route_name(r)}"
        for r in config_routes
        for h in r.host or ()
        if h.startswith("*.")
    }
    # pxproxy's own ports are kept from declared routes of either protocol.
    owners: dict[str, str] = {
        f"{kind}port {p}": what for p, what in (reserved or {}).items() for kind in ("", "udp ")
    }
    for route in routes:
        for claim in _claims(route.config):
            owners.setdefault(claim, f"config route {route.name}")
    problems: list[RouteProblem] = []
    entries = sorted(declared, key=lambda d: _guest_order(d.guest))
    if not policy.enabled:
        entries = []
    # Wildcards guests declared so far: suffix -> (guest, who). Traefik ranks every declared
    # wildcard alike (below your own routers), so two guests' nested wildcards would tie.
    theirs: dict[str, tuple[str, str]] = {}
    for entry in entries:
        if entry.error is not None:
            problems.append(RouteProblem(entry.guest, entry.name, entry.error))
        for config in entry.routes:
            refused = _refusal(config, policy, wildcards) or _nested(config, entry.guest, theirs)
            if refused is not None:
                problems.append(
                    RouteProblem(entry.guest, entry.name, f"route {route_name(config)}: {refused}")
                )
                continue
            taken = [(c, owners[c]) for c in _claims(config) if c in owners]
            if taken:
                claim, owner = taken[0]
                problems.append(
                    RouteProblem(
                        entry.guest,
                        entry.name,
                        f"route {route_name(config)}: {claim} is already routed by {owner}",
                    )
                )
                continue
            who = f"the notes of {entry.name} ({entry.guest})"
            for claim in _claims(config):
                owners[claim] = who
            for host in config.host or ():
                if host.startswith("*."):
                    theirs.setdefault(host.rstrip(".").lower()[2:], (entry.guest, who))
            routes.append(Route(config, "notes", entry.guest))
    return RouteSet(tuple(routes), tuple(problems), version)


def _guest_order(key: str) -> tuple[str, int, str]:
    cluster, _, vmid = key.rpartition(":")
    return (cluster, int(vmid), key) if vmid.isdigit() else (cluster, 0, key)


class RouteStore:
    """The one place the current RouteSet lives. The daemon publishes (on reload and when
    notes change); the proxy, idle-watch, the API, DNS and the integrations read."""

    def __init__(self, initial: RouteSet | None = None) -> None:
        self._current = initial or RouteSet()
        # Ports of pxproxy's own listeners, which no declared TCP or UDP route may take, and
        # what declared routes may be (the config's `notes:`).
        self.reserved: dict[int, str] = {}
        self.policy = NotesPolicy()
        self._published = asyncio.Event()
        self._listeners: list[Callable[[RouteSet], None]] = []

    @property
    def current(self) -> RouteSet:
        return self._current

    def on_change(self, listener: Callable[[RouteSet], None]) -> None:
        """Called synchronously with every new set, in registration order."""
        self._listeners.append(listener)

    def publish(self, config_routes: Sequence[RouteConfig], declared: Iterable[Declared]) -> bool:
        """Merge and swap in a new set; False (and nothing changes) when it is the same."""
        new = merge(config_routes, declared, self._current.version + 1, self.reserved, self.policy)
        if new.routes == self._current.routes and new.problems == self._current.problems:
            return False
        self._current = new
        for listener in self._listeners:
            listener(new)
        self._published.set()
        self._published = asyncio.Event()
        return True

    async def wait_until(self, predicate: Callable[[RouteSet], bool], timeout_s: float) -> RouteSet:
        async with asyncio.timeout(timeout_s):
            while not predicate(self._current):
                await self._published.wait()
        return self._current
