"""`?host=` as the proxy sees it: a route's host first, then the inventory's name rules.

Precedence, stopping at the first that applies:
1. a route host (`RouteTable.match`: exact names, then the longest `*.domain` wildcard): the
   answer is that route's guest ref resolved against the snapshot, exactly what the proxy would
   forward to. When the ref matches no guest (or several), that is the answer too: another guest
   that merely shares the name is not what the proxy serves;
2. otherwise `Snapshot.lookup_host`: guest name, first label, aliases, node names, node aliases.
A `host` the proxy would refuse (not a valid `uri-host[:port]`) matches nothing at all; a port
is ignored, as the proxy ignores it.
"""

from __future__ import annotations

from typing import NamedTuple

from ..inventory.snapshot import NO_MATCH, Match, Snapshot
from .hosts import RouteMatch, RouteTable, normalise_host


class HostLookup(NamedTuple):
    match: Match
    route: RouteMatch | None  # the route whose host matched; None: the name rules answered


def lookup_host(routes: RouteTable, snapshot: Snapshot, host: str) -> HostLookup:
    name = normalise_host(host)
    if not name:
        return HostLookup(NO_MATCH, None)
    found = routes.match_name(name)
    if found is not None:
        return HostLookup(snapshot.lookup_ref(found.route.guest), found)
    return HostLookup(snapshot.lookup_host(name), None)
