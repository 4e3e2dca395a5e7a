"""The node a path names, and the guest of a {node}/{vmid} path, for every endpoint that takes
a node: `pve1`, an alias from `nodes:` (`hv1`), or `home:pve1` for one cluster's node. One
resolver (Snapshot.node) decides for all of them; a bare name in several clusters is a 409
whose candidates are the `cluster:node` refs to use instead."""

from __future__ import annotations

from aiohttp import web

from ...inventory.model import Guest, Node
from ..problems import ambiguous, not_found
from ._common import context, one_guest
from ._guest_lookup import guest_by_ref


def one_node(request: web.Request, name: str) -> Node:
    nodes = context(request).inventory.snapshot.node(name).nodes
    if not nodes:
        raise not_found(f"no node named {name!r}")
    if len(nodes) > 1:
        raise ambiguous(
            f"{len(nodes)} clusters have a node named {name!r}; use cluster:node",
            [{"cluster": n.cluster, "name": n.name, "ref": f"{n.cluster}:{n.name}"} for n in nodes],
        )
    return nodes[0]


def guest_on_node(request: web.Request) -> Guest:
    """The guest of /exec/{node}/{vmid}, /journal/{node}/{vmid}, /tail/{node}/{vmid}."""
    node = request.match_info["node"]
    vmid = request.match_info["vmid"]
    what = f"{node}/{vmid}"
    snapshot = context(request).inventory.snapshot
    # guest_on_node validates the vmid (ASCII, 1..9 digits): no int() of hostile digit strings.
    match = snapshot.guest_on_node(node, vmid)
    if match.guests:
        return one_guest(match, what)
    # Not there: the 404 names the node the vmid is on, when it is on another one.
    return guest_by_ref(snapshot, what, what)
