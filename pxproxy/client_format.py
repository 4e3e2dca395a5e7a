"""How the CLI prints the API's JSON: aligned tables for `ls` and `routes`, a block for `lookup`,
the stats line's columns. Pure functions of the documents, so they are tested without a daemon."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

_STATS_HEADER = ("STATUS", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O")
_STATS_WIDTHS = (10, 8, 22, 8, 22, 0)
STATS_HEADER_LINE = "".join(
    f.ljust(w - 1) + " " if w else f for f, w in zip(_STATS_HEADER, _STATS_WIDTHS, strict=True)
).rstrip()


def format_stats_line(line: str) -> str | None:
    """`running|31.1%|9.6GiB/20GiB|48.87%|4.7GiB/3.3GiB|25GiB/36GiB` as aligned columns."""
    fields = line.strip().split("|")
    if len(fields) != len(_STATS_HEADER):
        return None
    return "".join(
        f.replace("/", " / ").ljust(width - 1) + " " if width else f.replace("/", " / ")
        for f, width in zip(fields, _STATS_WIDTHS, strict=True)
    ).rstrip()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell, two spaces apart; no trailing spaces."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def duration(seconds: float) -> str:
    """A short human span: 45s, 5m 3s, 4h 5m, 3d 4h."""
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s" if s else f"{minutes}m"
    return f"{s}s"


def _text(value: Any) -> str:
    return "-" if value in (None, "", []) else str(value)


def guests_table(guests: Sequence[Mapping[str, Any]]) -> str:
    """`pxproxy ls`: one row per guest; a CLUSTER column when more than one cluster shows."""
    ordered = sorted(guests, key=lambda g: (str(g.get("cluster")), int(g.get("vmid") or 0)))
    several = len({g.get("cluster") for g in ordered}) > 1
    header = ["NAME", "VMID", "NODE", "TYPE", "STATUS", "IPS", "UPTIME"]
    rows = []
    for g in ordered:
        uptime = g.get("uptime") or 0
        row = [
            _text(g.get("name")),
            _text(g.get("vmid")),
            _text(g.get("node")),
            _text(g.get("type")),
            _text(g.get("status")),
            ",".join(g.get("ips") or []) or "-",
            duration(uptime) if uptime and g.get("status") == "running" else "-",
        ]
        rows.append([_text(g.get("cluster")), *row] if several else row)
    return table(["CLUSTER", *header] if several else header, rows)


def routes_table(routes: Sequence[Mapping[str, Any]]) -> str:
    """`pxproxy routes`: where each route listens, its guest, idle-watch and wake state."""
    rows = []
    for r in routes:
        if r.get("host"):
            where = ",".join(r["host"]) + (r.get("path_prefix") or "")
        else:
            where = f"tcp {r.get('listen')}"
        idle = r.get("idle")
        if isinstance(idle, Mapping):
            idle_text = f"{idle.get('stop_method')} after {duration(idle.get('timeout_s') or 0)}"
        else:
            idle_text = "-"
        target = f"{r.get('scheme') or 'tcp'}:{r.get('port')}" if r.get("host") else r.get("port")
        state = _text(r.get("state")) + _stopping_text(r.get("stopping"))
        rows.append([where, _text(r.get("guest")), _text(target), idle_text, state])
    return table(["ROUTE", "GUEST", "UPSTREAM", "IDLE", "STATE"], rows)


def _stopping_text(stopping: Any) -> str:
    """A before_stop under way: " (before_stop running)", or " (stopping in 42s)"."""
    if not isinstance(stopping, Mapping):
        return ""
    left = stopping.get("stopping_in_s")
    if isinstance(left, int | float):
        return f" (stopping in {duration(math.ceil(left))})"
    return " (before_stop running)"


def lookup_text(doc: Mapping[str, Any]) -> str:
    """`pxproxy lookup`: what matched, as `key  value` lines."""
    pairs: list[tuple[str, str]] = [("match", f"{doc.get('match')} {doc.get('query')}")]
    guest = doc.get("guest")
    node = doc.get("node")
    if isinstance(guest, Mapping):
        pairs += [
            ("guest", f"{guest.get('cluster')}:{guest.get('vmid')}"),
            ("name", _text(guest.get("name"))),
            ("type", _text(guest.get("type"))),
            ("node", _text(guest.get("node"))),
            ("status", _text(guest.get("status"))),
            ("ips", ", ".join(guest.get("ips") or []) or "-"),
        ]
        if guest.get("aliases"):
            pairs.append(("aliases", ", ".join(guest["aliases"])))
    elif isinstance(node, Mapping):
        pairs += [
            ("node", f"{node.get('cluster')}:{node.get('name')}"),
            ("status", _text(node.get("status"))),
            ("ip", _text(node.get("ip"))),
        ]
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)
