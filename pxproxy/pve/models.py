"""Typed views of the Proxmox answers pxproxy relies on, coerced across PVE 7, 8 and 9."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import PveProtocolError


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


def as_number(value: object, default: float = 0.0) -> float:
    """A finite number from PVE (number or numeric string); NaN and infinities are `default`."""
    number = as_float(value, default)
    return number if math.isfinite(number) else default


def _count(value: object) -> int:
    return int(as_number(value))


@dataclass(frozen=True, slots=True)
class GuestStatus:
    """`/nodes/{node}/{type}/{vmid}/status/current`: the guest's live state and counters."""

    vmid: int
    name: str
    status: str  # what PVE says: running | stopped (a paused VM says running)
    qmpstatus: str | None  # QEMU only: running | paused | prelaunch | ...
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
    def state(self) -> str:
        """running | stopped | paused ...: qmpstatus wins when it says more than "running"."""
        if self.status == "running" and self.qmpstatus and self.qmpstatus != "running":
            return self.qmpstatus
        return self.status

    @property
    def paused(self) -> bool:
        return self.state == "paused"


def parse_guest_status(data: object) -> GuestStatus:
    item = data if isinstance(data, Mapping) else {}
    qmp = item.get("qmpstatus")
    return GuestStatus(
        vmid=_count(item.get("vmid")),
        name=as_str(item.get("name")),
        status=as_str(item.get("status")) or "unknown",
        qmpstatus=qmp if isinstance(qmp, str) and qmp else None,
        cpu=as_number(item.get("cpu")),
        cpus=as_number(item.get("cpus", item.get("maxcpu"))),
        mem=_count(item.get("mem")),
        maxmem=_count(item.get("maxmem")),
        netin=_count(item.get("netin")),
        netout=_count(item.get("netout")),
        diskread=_count(item.get("diskread")),
        diskwrite=_count(item.get("diskwrite")),
        uptime=_count(item.get("uptime")),
    )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """`/nodes/{node}/status`. Size maps hold only the keys PVE sent (`available` exists only
    on PVE >= 9.0: omitted rather than invented as zero)."""

    cpu: float
    cpus: int
    cpu_model: str
    wait: float
    memory: dict[str, int]
    swap: dict[str, int]
    rootfs: dict[str, int]
    loadavg: tuple[float, ...]
    uptime: int
    pveversion: str
    kversion: str


def _sizes(value: object, keys: tuple[str, ...]) -> dict[str, int]:
    source = value if isinstance(value, Mapping) else {}
    return {k: _count(source[k]) for k in keys if k in source}


def parse_node_status(data: object) -> NodeStatus:
    item = data if isinstance(data, Mapping) else {}
    raw_load = item.get("loadavg")
    load = tuple(as_number(x) for x in raw_load) if isinstance(raw_load, list | tuple) else ()
    cpuinfo = item.get("cpuinfo")
    info = cpuinfo if isinstance(cpuinfo, Mapping) else {}
    return NodeStatus(
        cpu=as_number(item.get("cpu")),
        cpus=_count(info.get("cpus")),
        cpu_model=as_str(info.get("model")),
        wait=as_number(item.get("wait")),
        memory=_sizes(item.get("memory"), ("total", "used", "free", "available")),
        swap=_sizes(item.get("swap"), ("total", "used", "free")),
        rootfs=_sizes(item.get("rootfs"), ("total", "used", "free", "avail")),
        loadavg=load,
        uptime=_count(item.get("uptime")),
        pveversion=as_str(item.get("pveversion")),
        kversion=as_str(item.get("kversion")),
    )


@dataclass(frozen=True, slots=True)
class JournalPage:
    """`/nodes/{node}/journal` answers `[start cursor, line, ..., end cursor]`; following means
    asking again from `end_cursor`. Lines are single-line (CR dropped, LF made a space)."""

    start_cursor: str
    lines: tuple[str, ...]
    end_cursor: str


def parse_journal_page(data: object, path: str) -> JournalPage:
    if not isinstance(data, list) or len(data) < 2:
        raise PveProtocolError("journal answer is not [cursor, ..., cursor]", path=path)
    lines = tuple(str(x).replace("\r", "").replace("\n", " ") for x in data[1:-1])
    return JournalPage(start_cursor=str(data[0]), lines=lines, end_cursor=str(data[-1]))


@dataclass(frozen=True, slots=True)
class AgentExecStatus:
    """`agent/exec-status` of one pid. The agent hands out the output only once exited."""

    exited: bool
    exitcode: int | None
    signal: int | None
    out_data: str
    err_data: str

    @property
    def exit_status(self) -> int:
        """The exit code; a command killed by a signal without one counts as 1."""
        if self.exitcode is not None:
            return self.exitcode
        return 1 if self.signal else 0


def parse_agent_exec_status(data: object) -> AgentExecStatus:
    item = data if isinstance(data, Mapping) else {}

    def opt_int(key: str) -> int | None:
        value = item.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def text(key: str) -> str:
        value = item.get(key)
        return value if isinstance(value, str) else ""

    return AgentExecStatus(
        exited=bool(item.get("exited")),
        exitcode=opt_int("exitcode"),
        signal=opt_int("signal"),
        out_data=text("out-data"),
        err_data=text("err-data"),
    )


@dataclass(frozen=True, slots=True)
class TermproxyTicket:
    """What `POST /nodes/{node}/termproxy` hands out to open the node's vncwebsocket.
    `cookie` is the PVEAuthCookie the termproxy POST was made with: the websocket must send
    the same one."""

    user: str
    ticket: str
    port: str
    cookie: str


def parse_termproxy(data: object, cookie: str, path: str) -> TermproxyTicket:
    if not isinstance(data, Mapping) or not {"user", "ticket", "port"} <= data.keys():
        raise PveProtocolError("termproxy answer lacks user/ticket/port", path=path)
    # PVE sends the port as a string, some versions as a number: accept both.
    return TermproxyTicket(str(data["user"]), str(data["ticket"]), str(data["port"]), cookie)
