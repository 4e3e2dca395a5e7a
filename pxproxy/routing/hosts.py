"""The host → route table, built once from the configuration: the one place that decides which
route a host name belongs to, for the proxy (Host header) and for `GET /api/v1/lookup?host=`.

Exact names win over wildcards; among wildcards the longest suffix wins, so `*.a.example.com`
beats `*.example.com` for `x.a.example.com`. Lookups are dict accesses, one per label.
A host that is not a valid `uri-host[:port]` (host_syntax.py) matches nothing, so neither
`.a.example.com` nor `x..a.example.com` is taken for `*.a.example.com`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from ..config.models import RouteConfig
from .host_syntax import BadAuthority, ipv6_host, parse_host

__all__ = ["RouteMatch", "RouteTable", "normalise_host"]


class RouteMatch(NamedTuple):
    route_index: int  # position in config.routes: the key of the route's gate
    route: RouteConfig
    name: str  # the route's first host pattern: a stable metrics label


def normalise_host(value: str) -> str:
    """ "Wiki.Example.COM.:8443" -> "wiki.example.com"; "[::1]:80" -> "::1"; "" for what is
    not a host (parse_host's rules). A bare IPv6 address, which no Host header may carry, is
    taken too: the API's `?host=` is given one."""
    try:
        return parse_host(value).host
    except BadAuthority:
        return ipv6_host(value.strip()) or ""


class RouteTable:
    def __init__(self, routes: Iterable[RouteConfig]) -> None:
        self._exact: dict[str, RouteMatch] = {}
        self._wildcard: dict[str, RouteMatch] = {}  # "example.com" for "*.example.com"
        self._all: list[RouteMatch] = []
        for index, route in enumerate(routes):
            if route.host is None:
                continue  # a TCP route: not ours
            match = RouteMatch(index, route, route.host[0].lower())
            self._all.append(match)
            for pattern in route.host:
                key = pattern.rstrip(".").lower()
                if key.startswith("*."):
                    # The first route naming a pattern keeps it; config order decides.
                    self._wildcard.setdefault(key[2:], match)
                else:
                    self._exact.setdefault(key, match)

    @property
    def routes(self) -> list[RouteMatch]:
        return list(self._all)

    def match(self, host_header: str) -> RouteMatch | None:
        """The route for a Host value (port, case and a trailing dot ignored)."""
        return self.match_name(normalise_host(host_header))

    def match_name(self, host: str) -> RouteMatch | None:
        """The route for a host already in routing form (`Authority.host`)."""
        # Cheap guards, kept even though parse_host refuses these: a wildcard must never
        # be reached through an empty label.
        if not host or host[0] == "." or host[-1] == "." or ".." in host:
            return None
        found = self._exact.get(host)
        if found is not None:
            return found
        if not self._wildcard:
            return None
        # Strip one label at a time: the first suffix found is the longest wildcard.
        rest = host
        while True:
            dot = rest.find(".")
            if dot < 0:
                return None
            rest = rest[dot + 1 :]
            found = self._wildcard.get(rest)
            if found is not None:
                return found
