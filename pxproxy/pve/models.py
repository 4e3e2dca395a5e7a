"""Typed views of the Proxmox answers pxproxy relies on, coerced across PVE 7, 8 and 9."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def as_int(value: object, default: int = 0) -> int:
    """PVE sends numbers as JSON numbers or strings depending on version and endpoint."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else default
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                return int(float(value))
            except (ValueError, OverflowError):  # "nan"; "1e999", "-inf" and huge digit strings
                return default
    return default


def as_float(value: object, default: float = 0.0) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return default
    return default


def as_str(value: object, default: str = "") -> str:
    if value is None:
        return default
    return value if isinstance(value, str) else str(value)


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """A node entry of /cluster/status."""

    name: str
    ip: str | None
    online: bool
    local: bool
    nodeid: int | None


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    """/cluster/status: the cluster name (None for a standalone node) and its nodes."""

    cluster_name: str | None
    quorate: bool | None
    nodes: tuple[ClusterNode, ...]


def parse_cluster_status(data: object) -> ClusterStatus:
    cluster_name: str | None = None
    quorate: bool | None = None
    nodes: list[ClusterNode] = []
    for item in data if isinstance(data, list) else ():
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "cluster":
            cluster_name = as_str(item.get("name")) or None
            quorate = bool(as_int(item.get("quorate"), 1))
        elif kind == "node" and item.get("name"):
            nodes.append(
                ClusterNode(
                    name=as_str(item["name"]),
                    ip=as_str(item.get("ip")) or None,
                    online=bool(as_int(item.get("online"), 1)),
                    local=bool(as_int(item.get("local"), 0)),
                    nodeid=as_int(item["nodeid"]) if "nodeid" in item else None,
                )
            )
    nodes.sort(key=lambda n: n.name)
    return ClusterStatus(cluster_name=cluster_name, quorate=quorate, nodes=tuple(nodes))


@dataclass(frozen=True, slots=True)
class TaskStatus:
    upid: str
    node: str
    running: bool
    exitstatus: str | None

    @property
    def ok(self) -> bool:
        """PVE counts "OK" and "WARNINGS: n" as success."""
        status = self.exitstatus or ""
        return not self.running and (status == "OK" or status.startswith("WARNINGS"))


def parse_task_status(upid: str, node: str, data: object) -> TaskStatus:
    item = data if isinstance(data, Mapping) else {}
    status = as_str(item.get("status"))
    exitstatus = item.get("exitstatus")
    return TaskStatus(
        upid=upid,
        node=node,
        running=status == "running",
        exitstatus=as_str(exitstatus) if exitstatus is not None else None,
    )
