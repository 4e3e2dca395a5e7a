"""How guest and node statistics look on the wire: IEC units, the one-line text format, NDJSON.

Pure functions over plain values, so they are tested without sockets. The Proxmox answers come
typed from pve/models.py, which already coerced PVE 7's numeric strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..pve.models import GuestStatus, NodeStatus

__all__ = [
    "GuestSample",
    "NodeSample",
    "Rates",
    "error_json",
    "error_line",
    "guest_json",
    "guest_line",
    "iec",
    "node_json",
    "node_line",
    "parse_guest",
    "parse_node",
    "rates",
]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")

TEXT_HEADER = "STATUS|CPU%|MEM USAGE/LIMIT|MEM%|NET I/O|BLOCK I/O"


def iec(value: float) -> str:
    """`0B`, `512B`, `1.5KiB`, `9.6GiB`, `20GiB`: one decimal at most, none when it is zero."""
    if not math.isfinite(value) or value <= 0:
        return "0B"
    if value < 1024:
        return f"{int(value)}B"
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    # 1023.96 KiB would print as "1024KiB": carry into the next unit instead.
    if round(value, 1) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    text = f"{value:.1f}".removesuffix(".0")
    return text + _UNITS[unit]


@dataclass(frozen=True, slots=True)
class GuestSample:
    """One `status/current` answer, normalised. `time` is epoch seconds of the poll."""

    time: float
    vmid: int
    name: str
    status: str  # running | stopped | paused (qmpstatus wins when it says more)
    cpu: float  # fraction of the guest's cores, 0..1
    cpus: float
    mem: int
    maxmem: int
    netin: int
    netout: int
    diskread: int
    diskwrite: int
    uptime: int

    @property
    def cpu_percent(self) -> float:
        return max(0.0, self.cpu * 100)

    @property
    def mem_percent(self) -> float:
        return self.mem / self.maxmem * 100 if self.maxmem > 0 else 0.0


def parse_guest(status: GuestStatus, time: float) -> GuestSample:
    return GuestSample(
        time=time,
        vmid=status.vmid,
        name=status.name,
        status=status.state,
        cpu=status.cpu,
        cpus=status.cpus,
        mem=status.mem,
        maxmem=status.maxmem,
        netin=status.netin,
        netout=status.netout,
        diskread=status.diskread,
        diskwrite=status.diskwrite,
        uptime=status.uptime,
    )


@dataclass(frozen=True, slots=True)
class Rates:
    """Bytes per second between two samples; None when unknown (first sample, counter reset)."""

    netin: float | None = None
    netout: float | None = None
    diskread: float | None = None
    diskwrite: float | None = None


NO_RATES = Rates()


def rates(prev: GuestSample | None, cur: GuestSample) -> Rates:
    if prev is None:
        return NO_RATES
    dt = cur.time - prev.time
    if dt <= 0:
        return NO_RATES

    def per_s(a: int, b: int) -> float | None:
        # Counters restart from zero when the guest restarts: a negative delta is no rate.
        return round((b - a) / dt, 1) if b >= a else None

    return Rates(
        netin=per_s(prev.netin, cur.netin),
        netout=per_s(prev.netout, cur.netout),
        diskread=per_s(prev.diskread, cur.diskread),
        diskwrite=per_s(prev.diskwrite, cur.diskwrite),
    )


def guest_line(s: GuestSample) -> str:
    """`running|31.1%|9.6GiB/20GiB|48.87%|4.7GiB/3.3GiB|25GiB/36GiB` (counters are totals)."""
    return (
        f"{s.status}|{s.cpu_percent:.1f}%|{iec(s.mem)}/{iec(s.maxmem)}|{s.mem_percent:.2f}%|"
        f"{iec(s.netin)}/{iec(s.netout)}|{iec(s.diskread)}/{iec(s.diskwrite)}"
    )


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def guest_json(s: GuestSample, r: Rates, ref: str = "") -> str:
    data: dict[str, Any] = {
        "time": round(s.time, 3),
        "ref": ref,
        "vmid": s.vmid,
        "name": s.name,
        "status": s.status,
        "cpu": s.cpu,
        "cpu_percent": round(s.cpu_percent, 2),
        "cpus": s.cpus,
        "mem": s.mem,
        "maxmem": s.maxmem,
        "mem_percent": round(s.mem_percent, 2),
        "netin": s.netin,
        "netout": s.netout,
        "diskread": s.diskread,
        "diskwrite": s.diskwrite,
        "uptime": s.uptime,
        "netin_rate": r.netin,
        "netout_rate": r.netout,
        "diskread_rate": r.diskread,
        "diskwrite_rate": r.diskwrite,
    }
    return _dumps(data)


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One node status answer (pve.models.NodeStatus), normalised. `time` is epoch seconds."""

    time: float
    node: str
    cpu: float
    cpus: int
    wait: float
    memory: dict[str, int]
    swap: dict[str, int]
    rootfs: dict[str, int]
    loadavg: tuple[float, ...]
    uptime: int
    pveversion: str
    kversion: str
    cpu_model: str = ""  # cpuinfo.model: "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz"


def parse_node(node: str, status: NodeStatus, time: float) -> NodeSample:
    return NodeSample(
        time=time,
        node=node,
        cpu=status.cpu,
        cpus=status.cpus,
        wait=status.wait,
        memory=dict(status.memory),
        swap=dict(status.swap),
        rootfs=dict(status.rootfs),
        loadavg=status.loadavg,
        uptime=status.uptime,
        pveversion=status.pveversion,
        kversion=status.kversion,
        cpu_model=status.cpu_model,
    )


def node_json(s: NodeSample) -> str:
    total = s.memory.get("total", 0)
    used = s.memory.get("used", 0)
    root_total = s.rootfs.get("total", 0)
    root_used = s.rootfs.get("used", 0)
    data: dict[str, Any] = {
        "time": round(s.time, 3),
        "node": s.node,
        "cpu": s.cpu,
        "cpu_percent": round(max(0.0, s.cpu * 100), 2),
        "cpus": s.cpus,
        "wait": s.wait,
        "memory": s.memory,
        "mem_percent": round(used / total * 100, 2) if total > 0 else 0.0,
        "swap": s.swap,
        "rootfs": s.rootfs,
        "rootfs_percent": round(root_used / root_total * 100, 2) if root_total > 0 else 0.0,
        "loadavg": list(s.loadavg),
        "uptime": s.uptime,
        "pveversion": s.pveversion,
        "kversion": s.kversion,
        "cpu_model": s.cpu_model,
    }
    return _dumps(data)


NODE_TEXT_HEADER = "STATUS|CPU%|MEM USAGE/LIMIT|MEM%|ROOTFS USED/SIZE|LOAD 1 5 15|CPUS x MODEL"


def node_line(s: NodeSample) -> str:
    """`online|3.2%|2.5GiB/16GiB|15.63%|13GiB/100GiB|0.32 0.29 0.26|8 x Intel(R) Core(TM) ...`:
    the guest line's shape, rootfs and load in place of the I/O counters, and the CPU model on
    every line so a single sample (`?stream=0`, one SSE event) is complete on its own. A
    sample is an answer from the node, hence `online`."""
    total = s.memory.get("total", 0)
    used = s.memory.get("used", 0)
    mem_percent = used / total * 100 if total > 0 else 0.0
    load = " ".join(f"{x:.2f}" for x in s.loadavg) or "-"
    # No `|` inside a field; PVE pads some model strings with runs of spaces.
    model = " ".join(s.cpu_model.replace("|", "/").split()) or "unknown CPU"
    return (
        f"online|{max(0.0, s.cpu * 100):.1f}%|{iec(used)}/{iec(total)}|{mem_percent:.2f}%|"
        f"{iec(s.rootfs.get('used', 0))}/{iec(s.rootfs.get('total', 0))}|{load}|"
        f"{s.cpus} x {model}"
    )


def error_line(message: str) -> str:
    """An error in the text stream: one line, never mistaken for a sample (no `|`)."""
    return "error: " + " ".join(message.replace("|", "/").split())


def error_json(message: str, time: float, status: int) -> str:
    return _dumps({"time": round(time, 3), "error": message, "status": status})
