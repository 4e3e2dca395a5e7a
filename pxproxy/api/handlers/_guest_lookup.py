"""The one guest a ref names, with a 404 that names the fix when a node/vmid ref has the wrong
node (the guest migrated, or a typo): "guest 101 is on node pve1, not pve2"."""

from __future__ import annotations

import re

from aiohttp import web

from ...inventory.model import Guest
from ...inventory.snapshot import Snapshot
from ..problems import ApiError, not_found
from ._common import audit_refusal, context, one_guest

# node/vmid as Snapshot.lookup_ref reads it; "lxc/101" and "qemu/101" are type/vmid ids.
_NODE_VMID_RE = re.compile(r"([^/:\s]+)/(\d{1,9})")
_TYPES = ("lxc", "qemu")


def guest_by_ref(snapshot: Snapshot, ref: str, what: str | None = None) -> Guest:
    """The single guest `ref` matches, else 404 (naming the right node if the vmid lives on
    another one) or 409 with the candidates."""
    match = snapshot.lookup_ref(ref)
    if not match.guests:
        m = _NODE_VMID_RE.fullmatch(ref.strip())
        if m and m[1].lower() not in _TYPES:
            elsewhere = snapshot.lookup_ref(m[2]).guests
            if elsewhere:
                raise not_found(
                    _elsewhere(int(m[2]), m[1], elsewhere),
                    nodes=[{"cluster": g.cluster, "node": g.node, "ref": g.ref} for g in elsewhere],
                )
    return one_guest(match, what or f"ref {ref!r}")


def _elsewhere(vmid: int, asked: str, guests: tuple[Guest, ...]) -> str:
    if len(guests) == 1:
        return f"guest {vmid} is on node {guests[0].node}, not {asked}"
    where = " and ".join(f"node {g.node} of cluster {g.cluster}" for g in guests)
    return f"guests with vmid {vmid} are on {where}, not {asked}; use cluster:vmid"


def audited_guest(request: web.Request, action: str) -> Guest:
    """The guest of the request's {ref}; a ref that names none or several is refused (404/409)
    and the refusal audited like any other."""
    try:
        return guest_by_ref(context(request).inventory.snapshot, request.match_info["ref"])
    except ApiError as exc:
        audit_refusal(request, action, f"rejected: {exc.detail}")
        raise
