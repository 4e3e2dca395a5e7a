"""Turn a /cluster/resources body into guest and node records, tolerant of PVE 7-9 shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..pve.models import as_float, as_int
from .model import Guest, GuestType, Node

ALIAS_TAG_PREFIX = "alias."


class NodeEntry(NamedTuple):
    name: str
    status: str
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    uptime: int


class Resources(NamedTuple):
    guests: list[Guest]  # ips empty, aliases from tags only; the poller fills the rest
    nodes: list[NodeEntry]


def split_tags(value: object) -> tuple[str, ...]:
    """PVE joins tags with ';' (older versions also ',' or ' ')."""
    if not isinstance(value, str) or not value:
        return ()
    for sep in (",", " "):
        value = value.replace(sep, ";")
    return tuple(t for t in value.split(";") if t)


def tag_aliases(tags: tuple[str, ...]) -> tuple[str, ...]:
    n = len(ALIAS_TAG_PREFIX)
    return tuple(t[n:].lower() for t in tags if t.startswith(ALIAS_TAG_PREFIX) and len(t) > n)


def _int(value: object) -> int:
    # The fast path first: real PVE sends ints; only old versions send strings.
    return value if type(value) is int else as_int(value)


def _float(value: object) -> float:
    return float(value) if type(value) in (int, float) else as_float(value)  # type: ignore[arg-type]


def _opt_str(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_resources(body: bytes | str, cluster: str) -> Resources:
    """Decode once and build records; unknown or malformed entries are skipped."""
    payload = json.loads(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    guests: list[Guest] = []
    nodes: list[NodeEntry] = []
    if not isinstance(data, list):
        raise ValueError("/cluster/resources answer has no data list")
    for item in data:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "lxc" or kind == "qemu":
            guest = _guest(item, kind, cluster)
            if guest is not None:
                guests.append(guest)
        elif kind == "node":
            name = item.get("node")
            if isinstance(name, str) and name:
                nodes.append(
                    NodeEntry(
                        name,
                        str(item.get("status") or "unknown"),
                        _float(item.get("cpu", 0)),
                        _float(item.get("maxcpu", 0)),
                        _int(item.get("mem", 0)),
                        _int(item.get("maxmem", 0)),
                        _int(item.get("uptime", 0)),
                    )
                )
    return Resources(guests, nodes)


def _guest(item: Mapping[str, Any], kind: GuestType, cluster: str) -> Guest | None:
    vmid = _int(item.get("vmid"))
    node = item.get("node")
    if vmid <= 0 or not isinstance(node, str) or not node:
        return None
    tags = split_tags(item.get("tags"))
    get = item.get
    return Guest(
        cluster,
        f"{kind}/{vmid}",
        kind,
        node,
        vmid,
        str(get("name") or ""),
        str(get("status") or "unknown"),
        bool(_int(get("template", 0))),
        tags,
        tag_aliases(tags) if tags else (),
        _int(get("uptime", 0)),
        (),
        None,
        _opt_str(get("lock")),
        _opt_str(get("pool")),
        _opt_str(get("hastate")),
        _float(get("cpu", 0)),
        _float(get("maxcpu", 0)),
        _int(get("mem", 0)),
        _int(get("maxmem", 0)),
        _int(get("disk", 0)),
        _int(get("maxdisk", 0)),
        _int(get("netin", 0)),
        _int(get("netout", 0)),
        _int(get("diskread", 0)),
        _int(get("diskwrite", 0)),
    )


def make_nodes(
    cluster: str, entries: list[NodeEntry], ips: Mapping[str, str | None]
) -> tuple[Node, ...]:
    return tuple(
        Node(cluster, e.name, e.status, ips.get(e.name), e.cpu, e.maxcpu, e.mem, e.maxmem, e.uptime)
        for e in sorted(entries, key=lambda e: e.name)
    )
