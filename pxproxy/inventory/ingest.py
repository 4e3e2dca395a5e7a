"""Turn a /cluster/resources body into guest and node records, tolerant of PVE 7-9 shapes.

Every qemu, lxc and node entry is checked before it becomes a record: an entry missing a field
PVE always sends, with a field of the wrong type, an `id` that disagrees with its type and vmid,
a vmid outside 100..999999999, or an id already seen in the body is dropped and returned as a
`Rejection` with the reason. Numbers may come as strings (PVE 7): "101" is a vmid, "three
hundred" is not. Entries of other types (storage, pool, sdn) are not ours and are skipped.

Well-formed data takes a fast path: one type test per field; the reasons are worked out only
for the entries that fail.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from .model import Guest, GuestType, Node

ALIAS_TAG_PREFIX = "alias."
VMID_MIN = 100
VMID_MAX = 999_999_999
# A node name goes into Proxmox API paths: a hostname label (dots allowed), never a "/".
_NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DIGITS_RE = re.compile(r"[0-9]+")
_GUEST_ID_RE = re.compile(r"(?:lxc|qemu)/([0-9]{1,12})")

# The short reason classes: the metric's `reason` label, so a closed set.
RejectKind = Literal[
    "not_an_object", "missing_field", "wrong_type", "id_mismatch", "vmid_range", "duplicate"
]
EntryKind = Literal["guest", "node", "unknown"]


class NodeEntry(NamedTuple):
    name: str
    status: str
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    uptime: int


class Rejection(NamedTuple):
    """One entry dropped from the body, and why."""

    id: str  # what the entry is, for the log: "lxc/300", "node/pve1", or "entry #7"
    entry: EntryKind  # "unknown" when the entry does not say (not an object, no type)
    vmid: int | None  # the guest it claims to be, when that can be told; matches a known guest
    kind: RejectKind
    reason: str  # printable, bounded: values are shown through reprlib


class Resources(NamedTuple):
    guests: list[Guest]  # ips empty, aliases from tags only; the poller fills the rest
    nodes: list[NodeEntry]
    rejected: list[Rejection]


class _Rejected(Exception):
    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: RejectKind = kind
        self.reason = reason


def _make_show() -> reprlib.Repr:
    """repr() bounded in length and cost: reasons quote values sent by Proxmox into the log."""
    show = reprlib.Repr()
    show.maxstring = show.maxother = show.maxlong = 40
    show.maxlist = show.maxdict = show.maxtuple = 4
    show.maxlevel = 2
    return show


_show = _make_show().repr


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


# ------------------------------------------------------------------ field checks
# Each takes the fast path for the type PVE sends and leaves everything else to a slow helper
# that either coerces (a PVE 7 numeric string) or raises _Rejected.


def _int(value: object, field: str) -> int:
    return value if type(value) is int else _int_slow(value, field)


def _int_slow(value: object, field: str) -> int:
    if value is None:  # present but null: PVE omits what it does not know; treat alike
        return 0
    if isinstance(value, float):
        if value - value == 0.0:  # finite
            return int(value)
    elif isinstance(value, str):
        text = value.strip()
        if _DIGITS_RE.fullmatch(text) and len(text) <= 20:
            return int(text)
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number - number == 0.0:
                return int(number)
    elif isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise _Rejected("wrong_type", f"{field} {_show(value)} is not a number")


def _float(value: object, field: str) -> float:
    kind = type(value)
    if kind is float:
        if value - value == 0.0:  # type: ignore[operator]  # finite: json.loads accepts NaN
            return value  # type: ignore[return-value]
    elif kind is int:
        return float(value)  # type: ignore[arg-type]  # OverflowError: the caller rejects
    return _float_slow(value, field)


def _float_slow(value: object, field: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if number - number == 0.0:
                return number
    raise _Rejected("wrong_type", f"{field} {_show(value)} is not a number")


def _opt_str(value: object, field: str) -> str | None:
    if value is None or value == "":
        return None
    if type(value) is str:
        return value
    raise _Rejected("wrong_type", f"{field} {_show(value)} is not a string")


def _template(value: object) -> bool:
    if value is None or value == 0 or value == "0":  # 0, False, "0"
        return False
    if value == 1 or value == "1":  # 1, True, "1"
        return True
    raise _Rejected("wrong_type", f"template {_show(value)} is not 0 or 1")


def _vmid_slow(value: object) -> int:
    if value is None:
        raise _Rejected("missing_field", "no vmid")
    if isinstance(value, str) and _DIGITS_RE.fullmatch(text := value.strip()):
        if len(text) <= 20:  # longer is out of range anyway, and int() refuses over 4300
            return int(text)
        raise _Rejected("vmid_range", f"vmid {_show(value)} is outside {VMID_MIN}..{VMID_MAX}")
    raise _Rejected("wrong_type", f"vmid {_show(value)} is not an integer")


def _node_name(value: object, known: set[str]) -> str:
    """A node name; `known` caches the names already checked in this body (there are few)."""
    if type(value) is str and value in known:
        return value
    if value is None or value == "":
        raise _Rejected("missing_field", "no node")
    if type(value) is not str:
        raise _Rejected("wrong_type", f"node {_show(value)} is not a string")
    if not _NODE_NAME_RE.fullmatch(value):
        raise _Rejected("wrong_type", f"node {_show(value)} is not a node name")
    known.add(value)
    return value


def _status(value: object) -> str:
    if type(value) is str and value:
        return value
    if value is None or value == "":
        raise _Rejected("missing_field", "no status")
    raise _Rejected("wrong_type", f"status {_show(value)} is not a string")


# ------------------------------------------------------------------ entries


def parse_resources(body: bytes | str, cluster: str) -> Resources:
    """Decode once and build records; malformed entries are dropped into `rejected`."""
    payload = json.loads(body)
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ValueError("/cluster/resources answer has no data list")
    guests: list[Guest] = []
    nodes: list[NodeEntry] = []
    rejected: list[Rejection] = []
    vmids: dict[int, str] = {}  # vmid -> the id that has it: one guest per vmid in a cluster
    node_names: set[str] = set()  # names of node entries kept
    known: set[str] = set()  # node names that passed the check, guests' and nodes' alike
    for index, item in enumerate(data):
        if type(item) is not dict:
            rejected.append(
                Rejection(f"entry #{index}", "unknown", None, "not_an_object", "not an object")
            )
            continue
        kind = item.get("type")
        try:
            if kind == "lxc" or kind == "qemu":
                guest = _guest(item, kind, cluster, known)
                # setdefault hands back the very string it stored: `is` tells a first sighting.
                have = vmids.setdefault(guest.vmid, guest.id)
                if have is not guest.id:
                    what = "duplicate id" if have == guest.id else f"vmid already used by {have}"
                    raise _Rejected("duplicate", what)
                guests.append(guest)
            elif kind == "node":
                entry = _node(item, known)
                if entry.name in node_names:
                    raise _Rejected("duplicate", "duplicate node")
                node_names.add(entry.name)
                nodes.append(entry)
            elif kind is None:
                raise _Rejected("missing_field", "no type")
            elif type(kind) is not str:
                raise _Rejected("wrong_type", f"type {_show(kind)} is not a string")
            # Any other type (storage, pool, sdn, ...) is not inventory: skipped, not rejected.
        except _Rejected as exc:
            rejected.append(_rejection(item, index, exc.kind, exc.reason))
        except OverflowError:  # a float() of an integer with hundreds of digits
            rejected.append(_rejection(item, index, "wrong_type", "a number is out of range"))
    return Resources(guests, nodes, rejected)


def _guest(item: Mapping[str, Any], kind: GuestType, cluster: str, known: set[str]) -> Guest:
    get = item.get
    vmid = get("vmid")
    if type(vmid) is not int:
        vmid = _vmid_slow(vmid)
    if not VMID_MIN <= vmid <= VMID_MAX:
        raise _Rejected("vmid_range", f"vmid {_show(vmid)} is outside {VMID_MIN}..{VMID_MAX}")
    gid = f"{kind}/{vmid}"
    if get("id") != gid:
        raw = get("id")
        if raw is None:
            raise _Rejected("missing_field", "no id")
        raise _Rejected("id_mismatch", f"id {_show(raw)} does not match type and vmid {gid}")
    node = _node_name(get("node"), known)
    status = _status(get("status"))
    name = get("name")
    if type(name) is not str:
        name = _opt_str(name, "name") or ""
    raw_tags = get("tags")
    if raw_tags is None or raw_tags == "":
        tags: tuple[str, ...] = ()
    elif type(raw_tags) is str:
        tags = split_tags(raw_tags)
    else:
        raise _Rejected("wrong_type", f"tags {_show(raw_tags)} is not a string")
    return Guest(
        cluster,
        gid,
        kind,
        node,
        vmid,
        name,
        status,
        _template(get("template")),
        tags,
        tag_aliases(tags) if tags else (),
        _int(get("uptime", 0), "uptime"),
        (),
        None,
        _opt_str(get("lock"), "lock"),
        _opt_str(get("pool"), "pool"),
        _opt_str(get("hastate"), "hastate"),
        _float(get("cpu", 0.0), "cpu"),
        _float(get("maxcpu", 0.0), "maxcpu"),
        _int(get("mem", 0), "mem"),
        _int(get("maxmem", 0), "maxmem"),
        _int(get("disk", 0), "disk"),
        _int(get("maxdisk", 0), "maxdisk"),
        _int(get("netin", 0), "netin"),
        _int(get("netout", 0), "netout"),
        _int(get("diskread", 0), "diskread"),
        _int(get("diskwrite", 0), "diskwrite"),
    )


def _node(item: Mapping[str, Any], known: set[str]) -> NodeEntry:
    """A node entry. `id` is checked when present; a missing status reads "unknown"."""
    get = item.get
    name = _node_name(get("node"), known)
    raw_id = get("id")
    if raw_id is not None and raw_id != "node/" + name:
        raise _Rejected("id_mismatch", f"id {_show(raw_id)} does not match node/{name}")
    return NodeEntry(
        name,
        _opt_str(get("status"), "status") or "unknown",
        _float(get("cpu", 0.0), "cpu"),
        _float(get("maxcpu", 0.0), "maxcpu"),
        _int(get("mem", 0), "mem"),
        _int(get("maxmem", 0), "maxmem"),
        _int(get("uptime", 0), "uptime"),
    )


def _rejection(item: Mapping[str, Any], index: int, kind: RejectKind, reason: str) -> Rejection:
    """Name the rejected entry as well as it lets us: its id, else its type and vmid."""
    entry_type = item.get("type")
    raw_id = item.get("id")
    if entry_type == "node":
        node = item.get("node")
        label = f"node/{node}" if type(node) is str and _NODE_NAME_RE.fullmatch(node) else None
        return Rejection(label or f"entry #{index}", "node", None, kind, reason)
    entry: EntryKind = "guest" if entry_type in ("lxc", "qemu") else "unknown"
    vmid = _claimed_vmid(item.get("vmid"), raw_id)
    if type(raw_id) is str and raw_id.isascii() and raw_id.isprintable() and len(raw_id) <= 64:
        label = raw_id
    elif vmid is not None and entry == "guest":
        label = f"{entry_type}/{vmid}"
    else:
        label = f"entry #{index}"
    return Rejection(label, entry, vmid, kind, reason)


def _claimed_vmid(raw_vmid: object, raw_id: object) -> int | None:
    """The vmid a rejected entry stands for, from its vmid or else its id ("lxc/300")."""
    if type(raw_vmid) is int and VMID_MIN <= raw_vmid <= VMID_MAX:
        return raw_vmid
    if type(raw_vmid) is str and _DIGITS_RE.fullmatch(text := raw_vmid.strip()):
        value = int(text) if len(text) <= 12 else 0
        if VMID_MIN <= value <= VMID_MAX:
            return value
    if type(raw_id) is str and (m := _GUEST_ID_RE.fullmatch(raw_id)):
        value = int(m[1])
        if VMID_MIN <= value <= VMID_MAX:
            return value
    return None


def make_nodes(
    cluster: str, entries: list[NodeEntry], ips: Mapping[str, str | None]
) -> tuple[Node, ...]:
    return tuple(
        Node(cluster, e.name, e.status, ips.get(e.name), e.cpu, e.maxcpu, e.mem, e.maxmem, e.uptime)
        for e in sorted(entries, key=lambda e: e.name)
    )
