"""The lab cluster's state machine: nodes, guests, power actions and tasks. No transport here.

Power actions follow Proxmox semantics (shared/pve-reference.md): pre-checks fail at once with a
`LabError` carrying PVE's status and wording; accepted actions become `LabTask`s with real UPIDs
that run as asyncio tasks owned by the cluster. What "running" means on the network (listening
sockets) is delegated to a `GuestRuntime`, so this module stays free of I/O.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

GuestType = Literal["lxc", "qemu"]
GuestStatus = Literal["running", "stopped"]
TaskStatus = Literal["running", "stopped"]

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_+.-]*")
GiB = 1024**3
MiB = 1024**2
# 10 + vmid // 65536 must stay a valid octet.
MAX_VMID = (256 - 10) * 65536 - 1
# Stop, pause and resume are near-instant on PVE; a short delay keeps them observable as tasks.
QUICK_TASK_S = 0.05
PVE_VERSION = "pve-manager/8.4.14/b502d23c55afcba1"
KERNEL = "6.8.12-15-pve"


class LabError(Exception):
    """A refused request, as PVE answers it: HTTP status, message, optional per-field errors."""

    def __init__(self, status: int, message: str, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None


class _TaskFailed(Exception):
    """Ends a task with `TASK ERROR: <message>`."""


def guest_ip(vmid: int) -> str:
    """The guest's own loopback address.

    Unique per vmid, inside 127.0.0.0/8 so nothing leaves the machine and no root is needed, and
    never 127.0.0.1 (the second octet starts at 10) so guests never collide with host services.
    """
    if not 1 <= vmid <= MAX_VMID:
        raise ValueError(f"vmid {vmid} out of range 1..{MAX_VMID} for a loopback address")
    return f"127.{10 + vmid // 65536}.{vmid // 256 % 256}.{vmid % 256}"


def split_tags(text: str) -> tuple[str, ...]:
    """PVE::Tools::split_list: tags separated by ';', ',' or white space."""
    return tuple(t for t in re.split(r"[;,\s]+", text) if t)


def normalise_tags(text: str) -> tuple[str, ...]:
    """How PVE stores tags by default (datacenter tag-style: case-insensitive, alphabetical):
    lowercased, sorted, each once. A tag that is not a pve-tag raises LabError 400."""
    tags = split_tags(text)
    for tag in tags:
        if not _TAG_RE.fullmatch(tag):
            raise LabError(
                400,
                "Parameter verification failed.",
                {"tags": "invalid format - invalid characters in tag"},
            )
    return tuple(sorted({t.lower() for t in tags}))


def _wave(t: float, period_s: float, phase: float) -> float:
    """0..1, smooth and deterministic: stats move without randomness so tests can predict them."""
    return 0.5 + 0.5 * math.sin(t / period_s + phase)


@dataclass
class LabNode:
    name: str
    nodeid: int
    ip: str
    online: bool = True
    maxcpu: int = 8
    maxmem: int = 64 * GiB
    maxdisk: int = 512 * GiB
    booted_at: float = 0.0


@dataclass
class LabGuest:
    vmid: int
    type: GuestType
    name: str
    node: str
    status: GuestStatus = "stopped"
    # QEMU pause: status stays "running", qmpstatus says "paused".
    paused: bool = False
    # "suspended": QEMU hibernated (next start resumes) or LXC checkpointed (resume restores).
    lock: str | None = None
    ports: tuple[int, ...] = (8080,)
    tcp_ports: tuple[int, ...] = ()
    # UDP echo ports (a game server's): each datagram is sent back to its sender.
    udp_ports: tuple[int, ...] = ()
    boot_time_s: float = 1.0
    shutdown_time_s: float = 0.3
    fail_start: str | None = None
    agent: bool = False
    # The address is in the config (LXC netN ip=, QEMU cloud-init ipconfig0) rather than DHCP.
    # None: even vmids static, odd ones DHCP, so a default lab shows both resolution paths.
    static_ip: bool | None = None
    tags: tuple[str, ...] = ()
    # The notes (PVE's `description`, Markdown), as the config stores them.
    description: str = ""
    maxcpu: int = 0
    maxmem: int = 0
    maxdisk: int = 0
    started_at: float | None = None
    netin: int = 0
    netout: int = 0
    history: list[tuple[float, str]] = field(default_factory=list)
    # The task holding the guest's config lock; PVE serialises actions per guest the same way.
    busy: LabTask | None = None
    # An address given by LabCluster.readdress (a DHCP lease that changed); None: from the vmid.
    address: str | None = None

    def __post_init__(self) -> None:
        guest_ip(self.vmid)  # validates the range early
        if self.static_ip is None:
            self.static_ip = self.vmid % 2 == 0
        self.maxcpu = self.maxcpu or (1, 2, 4)[self.vmid % 3]
        self.maxmem = self.maxmem or (512 * MiB, 1 * GiB, 2 * GiB, 4 * GiB)[self.vmid % 4]
        self.maxdisk = self.maxdisk or (8 * GiB, 16 * GiB, 32 * GiB)[self.vmid % 3]

    @property
    def id(self) -> str:
        return f"{self.type}/{self.vmid}"

    @property
    def ip(self) -> str:
        return self.address or guest_ip(self.vmid)

    @property
    def label(self) -> str:
        """How PVE names the guest in messages: "CT 101" or "VM 100"."""
        return f"{'CT' if self.type == 'lxc' else 'VM'} {self.vmid}"

    @property
    def qmpstatus(self) -> str:
        return "paused" if self.paused else self.status

    @property
    def serving(self) -> bool:
        """Whether its servers should be listening: running and not paused."""
        return self.status == "running" and not self.paused

    def uptime(self, now: float) -> int:
        return int(now - self.started_at) if self.started_at is not None else 0

    def stats(self, now: float) -> dict[str, Any]:
        """cpu/mem/disk figures that move over time; zero when stopped, like PVE."""
        up = self.uptime(now)
        if self.status != "running":
            return {"cpu": 0, "mem": 0, "disk": 0, "diskread": 0, "diskwrite": 0, "uptime": 0}
        v = self.vmid
        cpu = 0.0 if self.paused else 0.01 + 0.2 * _wave(now, 17.0, v)
        mem = int(self.maxmem * (0.25 + 0.2 * _wave(now, 45.0, v * 1.3)))
        disk = int(self.maxdisk * (0.2 + (v % 7) / 20)) if self.type == "lxc" else 0
        rate = 20_000 + (v % 13) * 5_000
        # rate * (1 + 0.5 sin) integrated: monotonic, as cumulative counters must be.
        read = int(50 * MiB + rate * (up + 5 * (1 - math.cos(up / 10))))
        write = int(8 * MiB + rate / 3 * (up + 5 * (1 - math.cos(up / 7))))
        return {
            "cpu": round(cpu, 6),
            "mem": mem,
            "disk": disk,
            "diskread": read,
            "diskwrite": write,
            "uptime": up,
        }

    def set_state(self, now: float, state: str) -> None:
        self.history.append((now, state))


@dataclass
class LabTask:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: TaskStatus = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    log: list[str] = field(default_factory=list)
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ok(self) -> bool:
        return self.exitstatus == "OK" or (self.exitstatus or "").startswith("WARNINGS")

    def finish(self, error: str | None, now: float) -> None:
        if self.status == "stopped":
            return
        self.exitstatus = "OK" if error is None else error
        self.log.append("TASK OK" if error is None else f"TASK ERROR: {error}")
        self.status = "stopped"
        self.endtime = int(now)
        self._done.set()

    async def wait(self) -> LabTask:
        await self._done.wait()
        return self

    def status_json(self) -> dict[str, Any]:
        """`GET /nodes/{node}/tasks/{upid}/status`."""
        out: dict[str, Any] = {
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.type,
            "id": self.id,
            "user": self.user,
            "status": self.status,
        }
        if self.exitstatus is not None:
            out["exitstatus"] = self.exitstatus
        return out

    def log_json(self, start: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """`GET .../tasks/{upid}/log`: lines numbered from 1."""
        lines = self.log[start : start + limit]
        return [{"n": start + i + 1, "t": line} for i, line in enumerate(lines)]


class GuestRuntime(Protocol):
    """What running means outside the state machine (GuestServers opens real sockets)."""

    async def open(self, guest: LabGuest) -> None: ...

    async def close(self, guest: LabGuest) -> None: ...


class NullRuntime:
    """No sockets: for state-only use and tests."""

    async def open(self, guest: LabGuest) -> None:
        return None

    async def close(self, guest: LabGuest) -> None:
        return None


TaskBody = Callable[[LabTask, LabGuest], Awaitable[None]]

_GUEST_KEYS = frozenset(
    {
        "vmid",
        "type",
        "name",
        "node",
        "status",
        "ports",
        "tcp_ports",
        "udp_ports",
        "boot_time_s",
        "shutdown_time_s",
        "fail_start",
        "agent",
        "static_ip",
        "tags",
        "description",
        "maxcpu",
        "maxmem",
        "maxdisk",
    }
)
_DEFAULT_NAMES = (
    "wiki",
    "git",
    "db",
    "grafana",
    "minecraft",
    "nextcloud",
    "jellyfin",
    "homeassistant",
    "pihole",
    "vaultwarden",
    "prometheus",
    "win11",
    "nginx",
    "mail",
    "backup",
    "ci-runner",
)
# Guests the default scenario makes QEMU VMs; the rest are containers.
_DEFAULT_QEMU = frozenset({"db", "minecraft", "homeassistant", "win11", "ci-runner"})
_DEFAULT_TCP = {"minecraft": (25565,), "db": (5432,), "git": (2222,)}
# Minecraft Bedrock's port beside the Java edition's TCP one.
_DEFAULT_UDP = {"minecraft": (19132,)}


class LabCluster:
    """Nodes, guests and tasks of one simulated cluster (or standalone node)."""

    def __init__(
        self,
        *,
        cluster_name: str | None = "lab",
        runtime: GuestRuntime | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster_name = cluster_name
        self.runtime: GuestRuntime = runtime or NullRuntime()
        self.clock = clock
        self.nodes: dict[str, LabNode] = {}
        self.guests: dict[int, LabGuest] = {}
        self.tasks: dict[str, LabTask] = {}
        self.task_log: list[LabTask] = []  # every task in creation order, for tests
        self._running: set[asyncio.Task[None]] = set()
        self._next_pid = 0x1A2B0
        self._closed = False

    # -- building ---------------------------------------------------------------------------

    def add_node(self, name: str, *, online: bool = True) -> LabNode:
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists")
        index = len(self.nodes) + 1
        node = LabNode(
            name=name,
            nodeid=index,
            ip=f"127.9.0.{index}",  # below the guests' 127.10+ range
            online=online,
            booted_at=self.clock() - 3 * 86400 - index * 3600,
        )
        self.nodes[name] = node
        return node

    def add_guest(
        self,
        vmid: int,
        type: GuestType,
        name: str,
        node: str | None = None,
        *,
        status: str = "stopped",
        **knobs: Any,
    ) -> LabGuest:
        """Add a guest; "running" guests need `await open()` to get their servers."""
        if vmid in self.guests:
            raise ValueError(f"vmid {vmid} already exists")
        if type not in ("lxc", "qemu"):
            raise ValueError(f"guest {vmid}: type must be lxc or qemu, not {type!r}")
        if node is None:
            if not self.nodes:
                self.add_node("pve1")
            node = next(iter(self.nodes))
        if node not in self.nodes:
            raise ValueError(f"guest {vmid}: unknown node {node!r}")
        for key in ("ports", "tcp_ports", "udp_ports"):
            if key in knobs:
                knobs[key] = tuple(knobs[key])
        if "tags" in knobs:
            tags = knobs["tags"]
            knobs["tags"] = split_tags(tags) if isinstance(tags, str) else tuple(tags)
        guest = LabGuest(vmid=vmid, type=type, name=name, node=node, **knobs)
        now = self.clock()
        if status == "running":
            guest.status, guest.started_at = "running", now - 3600 - vmid
        elif status == "paused":
            # A paused VM keeps running; a "paused" container is a checkpointed (suspended) one.
            if type == "qemu":
                guest.status, guest.paused, guest.started_at = "running", True, now - 3600
            else:
                guest.lock = "suspended"
        elif status != "stopped":
            raise ValueError(f"guest {vmid}: status must be running, stopped or paused")
        guest.set_state(now, status)
        self.guests[vmid] = guest
        return guest

    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any],
        *,
        runtime: GuestRuntime | None = None,
        clock: Callable[[], float] = time.time,
    ) -> LabCluster:
        """Build from a scenario: {cluster, nodes: [name | {name, online}], guests: [{...}]}."""
        unknown = set(spec) - {"cluster", "nodes", "guests"}
        if unknown:
            raise ValueError(f"scenario: unknown key(s) {sorted(unknown)}")
        lab = cls(cluster_name=spec.get("cluster", "lab"), runtime=runtime, clock=clock)
        for i, entry in enumerate(spec.get("nodes") or ["pve1"]):
            if isinstance(entry, str):
                lab.add_node(entry)
            elif isinstance(entry, Mapping) and set(entry) <= {"name", "online"}:
                lab.add_node(str(entry["name"]), online=bool(entry.get("online", True)))
            else:
                raise ValueError(f"scenario: nodes[{i}] must be a name or {{name, online}}")
        for i, raw in enumerate(spec.get("guests") or []):
            if not isinstance(raw, Mapping):
                raise ValueError(f"scenario: guests[{i}] must be a mapping")
            bad = set(raw) - _GUEST_KEYS
            if bad:
                raise ValueError(f"scenario: guests[{i}]: unknown key(s) {sorted(bad)}")
            g = dict(raw)
            try:
                lab.add_guest(int(g.pop("vmid")), g.pop("type"), str(g.pop("name")), **g)
            except KeyError as exc:
                raise ValueError(f"scenario: guests[{i}]: missing {exc.args[0]}") from None
            except (TypeError, ValueError) as exc:
                raise ValueError(f"scenario: guests[{i}]: {exc}") from None
        return lab

    @classmethod
    def default(
        cls,
        guests: int = 8,
        nodes: int = 2,
        *,
        boot_time_s: float = 2.0,
        runtime: GuestRuntime | None = None,
        clock: Callable[[], float] = time.time,
    ) -> LabCluster:
        """A plausible homelab: named services, LXC and QEMU mixed, two of every three running."""
        lab = cls(cluster_name="lab" if nodes > 1 else None, runtime=runtime, clock=clock)
        for n in range(1, max(nodes, 1) + 1):
            lab.add_node(f"pve{n}")
        names = list(lab.nodes)
        for i in range(guests):
            base = _DEFAULT_NAMES[i % len(_DEFAULT_NAMES)]
            name = base if i < len(_DEFAULT_NAMES) else f"{base}{i // len(_DEFAULT_NAMES) + 1}"
            qemu = base in _DEFAULT_QEMU
            lab.add_guest(
                100 + i,
                "qemu" if qemu else "lxc",
                name,
                names[i % len(names)],
                status="stopped" if i % 3 == 2 else "running",
                tcp_ports=_DEFAULT_TCP.get(base, ()),
                udp_ports=_DEFAULT_UDP.get(base, ()),
                boot_time_s=boot_time_s,
                agent=qemu,
                tags=("lab", "web")
                if base in ("wiki", "git", "grafana", "nextcloud")
                else ("lab",),
            )
        return lab

    async def open(self) -> None:
        """Open the servers of guests that were created running."""
        for guest in self.guests.values():
            if guest.serving:
                await self.runtime.open(guest)

    async def readdress(self, vmid: int, ip: str) -> None:
        """Give the guest a new address, as a changed DHCP lease would: its servers move there
        (closed on the old one) and the API reports it from now on."""
        guest = self.guests[vmid]
        if guest.serving:
            await self.runtime.close(guest)
        guest.address = ip
        if guest.serving:
            await self.runtime.open(guest)

    async def close(self) -> None:
        """Cancel and await every task, then close every guest's servers."""
        self._closed = True
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for guest in self.guests.values():
            await self.runtime.close(guest)

    # -- lookups ----------------------------------------------------------------------------

    def guest(self, vmid: int, node: str | None = None, type: GuestType | None = None) -> LabGuest:
        """The guest, as PVE finds it from a /nodes/{node}/{type}/{vmid} path."""
        guest = self.guests.get(vmid)
        if (
            guest is None
            or (node is not None and guest.node != node)
            or (type and guest.type != type)
        ):
            where = f"nodes/{node or '<node>'}/{'lxc' if type == 'lxc' else 'qemu-server'}"
            raise LabError(500, f"Configuration file '{where}/{vmid}.conf' does not exist")
        return guest

    def node(self, name: str) -> LabNode:
        node = self.nodes.get(name)
        if node is None:
            raise LabError(500, f"hostname lookup '{name}' failed - failed to get address info")
        if not node.online:
            raise LabError(595, "No route to host")
        return node

    def task(self, upid: str) -> LabTask:
        task = self.tasks.get(upid)
        if task is None:
            raise LabError(400, "Parameter verification failed.", {"upid": "unable to parse upid"})
        return task

    def set_node_online(self, name: str, online: bool) -> None:
        if name not in self.nodes:
            raise ValueError(f"unknown node {name!r}")
        self.nodes[name].online = online

    # -- power actions ----------------------------------------------------------------------

    def start(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        guest = self._target(vmid, where)
        if guest.type == "lxc":
            if guest.status == "running":
                raise LabError(500, f"{guest.label} already running")
            if guest.lock:
                raise LabError(500, f"CT is locked ({guest.lock})")
        return self._spawn(guest, "start", user, self._do_start)

    def stop(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        guest = self._target(vmid, where)
        if guest.type == "lxc" and guest.status != "running":
            raise LabError(500, f"{guest.label} not running")
        return self._spawn(guest, "stop", user, self._do_stop)

    def shutdown(
        self,
        vmid: int,
        user: str = "root@pam",
        *,
        timeout_s: float = 60.0,
        force_stop: bool = False,
        **where: Any,
    ) -> LabTask:
        guest = self._target(vmid, where)
        if guest.status != "running":
            raise LabError(500, f"{guest.label} not running")
        if guest.paused and not force_stop:
            raise LabError(500, "VM is paused - cannot shutdown")

        async def body(task: LabTask, g: LabGuest) -> None:
            if not g.paused:
                task.log.append(f"shutting down {g.label}")
                # An unresponsive guest ignores the request; timeout then forceStop decides.
                await asyncio.sleep(min(g.shutdown_time_s, timeout_s))
                if g.shutdown_time_s > timeout_s and not force_stop:
                    raise _TaskFailed("shutdown timeout")
            await self._power_off(g, "stopped")

        return self._spawn(guest, "shutdown", user, body)

    def suspend(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        """QEMU: pause (stays running). LXC: CRIU checkpoint, the CT stops with lock suspended."""
        guest = self._target(vmid, where)
        if guest.status != "running":
            raise LabError(500, f"{guest.label} not running")
        return self._spawn(guest, "suspend", user, self._do_suspend)

    def suspend_todisk(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        """QEMU hibernate: stops with lock suspended; the next start resumes."""
        guest = self._target(vmid, where)
        if guest.type == "lxc":
            raise LabError(
                400,
                "Parameter verification failed.",
                {
                    "todisk": "property is not defined in schema and the schema does not allow "
                    "additional properties"
                },
            )
        if guest.status != "running":
            raise LabError(500, f"{guest.label} not running")

        async def body(task: LabTask, g: LabGuest) -> None:
            task.log.append("suspending to disk")
            await self.runtime.close(g)
            await asyncio.sleep(QUICK_TASK_S)
            g.status, g.paused, g.lock, g.started_at = "stopped", False, "suspended", None
            g.set_state(self.clock(), "hibernated")

        return self._spawn(guest, "suspend", user, body)

    def resume(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        guest = self._target(vmid, where)
        if guest.type == "lxc":
            if guest.status == "running":
                raise LabError(500, f"{guest.label} already running")
            if guest.lock != "suspended":
                raise LabError(500, f"{guest.label} not suspended")
        elif guest.status != "running":
            raise LabError(500, f"{guest.label} not running")
        return self._spawn(guest, "resume", user, self._do_resume)

    def reboot(self, vmid: int, user: str = "root@pam", **where: Any) -> LabTask:
        guest = self._target(vmid, where)
        if guest.status != "running":
            raise LabError(500, f"{guest.label} not running")

        async def body(task: LabTask, g: LabGuest) -> None:
            task.log.append(f"rebooting {g.label}")
            await asyncio.sleep(g.shutdown_time_s)
            await self.runtime.close(g)
            g.paused = False
            g.set_state(self.clock(), "rebooting")
            await asyncio.sleep(g.boot_time_s)
            await self._power_on(task, g)

        return self._spawn(guest, "reboot", user, body)

    # -- task bodies ------------------------------------------------------------------------

    async def _do_start(self, task: LabTask, g: LabGuest) -> None:
        if g.status == "running":
            raise _TaskFailed(f"{g.label} already running")  # QEMU: the task fails, not the call
        resuming = g.lock == "suspended"
        task.log.append(f"resuming {g.label} from disk" if resuming else f"starting {g.label}")
        g.set_state(self.clock(), "starting")
        await asyncio.sleep(g.boot_time_s)
        if g.fail_start is not None:
            g.set_state(self.clock(), "stopped")
            raise _TaskFailed(g.fail_start)
        g.lock = None
        await self._power_on(task, g)

    async def _do_stop(self, task: LabTask, g: LabGuest) -> None:
        await self._power_off(g, "stopped")
        g.lock = None  # stopping a hibernated VM discards its saved state
        await asyncio.sleep(QUICK_TASK_S)

    async def _do_suspend(self, task: LabTask, g: LabGuest) -> None:
        if g.type == "qemu":
            await self.runtime.close(g)
            g.paused = True
            g.set_state(self.clock(), "paused")
        else:
            task.log.append("checkpointing container")
            await self.runtime.close(g)
            g.status, g.lock, g.started_at = "stopped", "suspended", None
            g.netin = g.netout = 0
            g.set_state(self.clock(), "suspended")
        await asyncio.sleep(QUICK_TASK_S)

    async def _do_resume(self, task: LabTask, g: LabGuest) -> None:
        await asyncio.sleep(QUICK_TASK_S)
        if g.type == "qemu":
            if not g.paused:
                return  # resuming a running VM is a no-op that succeeds
            await self.runtime.open(g)
            g.paused = False
            g.set_state(self.clock(), "running")
        else:
            g.lock = None
            await self._power_on(task, g)

    async def _power_on(self, task: LabTask, g: LabGuest) -> None:
        g.netin = g.netout = 0  # a new guest process: PVE's counters start again
        try:
            await self.runtime.open(g)
        except OSError as exc:
            g.status, g.started_at = "stopped", None
            g.set_state(self.clock(), "stopped")
            raise _TaskFailed(f"startup failed: {exc.strerror or exc}") from exc
        g.status, g.paused, g.started_at = "running", False, self.clock()
        g.set_state(self.clock(), "running")

    async def _power_off(self, g: LabGuest, state: str) -> None:
        await self.runtime.close(g)
        g.netin = g.netout = 0  # PVE shows a stopped guest's counters as 0
        g.status, g.paused, g.started_at = "stopped", False, None
        g.set_state(self.clock(), state)

    # -- config options ---------------------------------------------------------------------

    def set_options(
        self,
        guest: LabGuest,
        *,
        description: str | None = None,
        tags: str | None = None,
        delete: tuple[str, ...] = (),
    ) -> None:
        """PUT .../config for the options the lab stores (checked by the API already)."""
        if guest.lock:
            raise LabError(500, f"{guest.label.split()[0]} is locked ({guest.lock})")
        new_tags = normalise_tags(tags) if tags is not None else None
        if "description" in delete:
            guest.description = ""
        if "tags" in delete:
            guest.tags = ()
        if description is not None:
            guest.description = description
        if new_tags is not None:
            guest.tags = new_tags

    # -- tasks ------------------------------------------------------------------------------

    def _target(self, vmid: int, where: Mapping[str, Any]) -> LabGuest:
        unknown = set(where) - {"node", "type"}
        if unknown:
            raise TypeError(f"unexpected argument(s) {sorted(unknown)}")
        guest = self.guest(vmid, where.get("node"), where.get("type"))
        self.node(guest.node)
        if guest.busy is not None:
            conf = "lxc" if guest.type == "lxc" else "qemu-server"
            raise LabError(
                500, f"can't lock file '/var/lock/{conf}/lock-{vmid}.conf' - got timeout"
            )
        return guest

    def _spawn(self, guest: LabGuest, action: str, user: str, body: TaskBody) -> LabTask:
        if self._closed:
            raise LabError(500, "lab is shutting down")
        node = self.nodes[guest.node]
        now = self.clock()
        self._next_pid += 1 + guest.vmid % 7
        pid, pstart, start = self._next_pid, int((now - node.booted_at) * 100), int(now)
        task_type = ("vz" if guest.type == "lxc" else "qm") + action
        upid = (
            f"UPID:{node.name}:{pid:08X}:{pstart:08X}:{start:08X}:{task_type}:{guest.vmid}:{user}:"
        )
        task = LabTask(upid, node.name, pid, pstart, start, task_type, str(guest.vmid), user)
        self.tasks[upid] = task
        self.task_log.append(task)
        guest.busy = task
        runner = asyncio.get_running_loop().create_task(self._run(task, guest, body))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)
        return task

    async def _run(self, task: LabTask, guest: LabGuest, body: TaskBody) -> None:
        error: str | None = None
        try:
            await body(task, guest)
        except _TaskFailed as exc:
            error = str(exc)
        except asyncio.CancelledError:
            error = "interrupted by signal"
            raise
        except Exception as exc:  # a lab bug must end the task visibly, not hang it
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if guest.busy is task:
                guest.busy = None
            task.finish(error, self.clock())

    async def wait_idle(self) -> None:
        """Wait until no task runs (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    # -- API shapes -------------------------------------------------------------------------

    def resources(self, type: str | None = None) -> list[dict[str, Any]]:
        """`GET /cluster/resources` (type: None, "vm" or "node")."""
        now = self.clock()
        out: list[dict[str, Any]] = []
        if type in (None, "node"):
            out.extend(self._node_resource(n, now) for n in self.nodes.values())
        if type in (None, "vm"):
            out.extend(self._guest_resource(g, now) for g in self.guests.values())
        return out

    def _node_resource(self, node: LabNode, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": f"node/{node.name}",
            "type": "node",
            "node": node.name,
            "status": "online" if node.online else "offline",
        }
        if node.online:
            status = self._node_figures(node, now)
            entry.update(
                cpu=status["cpu"],
                maxcpu=node.maxcpu,
                mem=status["memory"]["used"],
                maxmem=node.maxmem,
                disk=status["rootfs"]["used"],
                maxdisk=node.maxdisk,
                uptime=status["uptime"],
                level="",
            )
        return entry

    def _guest_resource(self, g: LabGuest, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": g.id, "vmid": g.vmid, "node": g.node, "type": g.type}
        if not self.nodes[g.node].online:
            entry["status"] = "unknown"
            return entry
        entry.update(
            name=g.name,
            status=g.status,
            template=0,
            maxcpu=g.maxcpu,
            maxmem=g.maxmem,
            maxdisk=g.maxdisk,
            netin=g.netin,
            netout=g.netout,
            **g.stats(now),
        )
        if g.tags:
            entry["tags"] = ";".join(g.tags)
        if g.lock:
            entry["lock"] = g.lock
        return entry

    def status_current(
        self, vmid: int, node: str | None = None, type: GuestType | None = None
    ) -> dict[str, Any]:
        """`GET /nodes/{node}/{lxc|qemu}/{vmid}/status/current`."""
        g = self.guest(vmid, node, type)
        self.node(g.node)
        now = self.clock()
        out: dict[str, Any] = {
            "vmid": g.vmid,
            "name": g.name,
            "status": g.status,
            "cpus": g.maxcpu,
            "maxmem": g.maxmem,
            "maxdisk": g.maxdisk,
            "netin": g.netin,
            "netout": g.netout,
            "ha": {"managed": 0},
            **g.stats(now),
        }
        if g.type == "lxc":
            out.update(type="lxc", swap=0, maxswap=512 * MiB)
        else:
            out.update(qmpstatus=g.qmpstatus, agent=1 if g.agent else 0)
        if g.status == "running":
            out["pid"] = 10_000 + g.vmid
        if g.tags:
            out["tags"] = ";".join(g.tags)
        if g.lock:
            out["lock"] = g.lock
        return out

    def cluster_status(self) -> list[dict[str, Any]]:
        """`GET /cluster/status`: a cluster entry (not for a standalone node) and node entries."""
        out: list[dict[str, Any]] = []
        online = sum(n.online for n in self.nodes.values())
        if self.cluster_name is not None:
            out.append(
                {
                    "type": "cluster",
                    "id": "cluster",
                    "name": self.cluster_name,
                    "nodes": len(self.nodes),
                    "version": len(self.nodes) + 2,
                    "quorate": 1 if online * 2 > len(self.nodes) else 0,
                }
            )
        for i, node in enumerate(self.nodes.values()):
            out.append(
                {
                    "type": "node",
                    "id": f"node/{node.name}",
                    "name": node.name,
                    "nodeid": node.nodeid,
                    "ip": node.ip,
                    "local": 1 if i == 0 else 0,
                    "online": 1 if node.online else 0,
                    "level": "",
                }
            )
        return out

    def node_status(self, name: str) -> dict[str, Any]:
        """`GET /nodes/{node}/status` (595 when the node is offline)."""
        return self._node_figures(self.node(name), self.clock())

    def _node_figures(self, node: LabNode, now: float) -> dict[str, Any]:
        mine = [g for g in self.guests.values() if g.node == node.name and g.status == "running"]
        cpu = 0.01 + sum(g.stats(now)["cpu"] * g.maxcpu for g in mine) / node.maxcpu
        used = 2 * GiB + sum(g.stats(now)["mem"] for g in mine)
        root_used = 12 * GiB + node.nodeid * GiB
        load = [f"{cpu * node.maxcpu * f:.2f}" for f in (1.0, 0.9, 0.8)]
        return {
            "uptime": int(now - node.booted_at),
            "cpu": round(min(cpu, 1.0), 6),
            "wait": round(0.002 * _wave(now, 23.0, node.nodeid), 6),
            "idle": 0,
            "loadavg": load,
            "kversion": f"Linux {KERNEL} #1 SMP PREEMPT_DYNAMIC PMX {KERNEL} (2025-09-15T10:00Z)",
            "pveversion": PVE_VERSION,
            "current-kernel": {
                "sysname": "Linux",
                "release": KERNEL,
                "version": "#1 SMP PREEMPT_DYNAMIC PMX",
                "machine": "x86_64",
            },
            "boot-info": {"mode": "efi", "secureboot": 0},
            "cpuinfo": {
                "model": "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz",
                "sockets": 1,
                "cores": node.maxcpu // 2,
                "cpus": node.maxcpu,
                "mhz": "3400.000",
                "hvm": "1",
                "user_hz": 100,
            },
            "memory": {
                "total": node.maxmem,
                "used": used,
                "free": node.maxmem - used,
                "available": node.maxmem - used,
            },
            "swap": {"total": 0, "used": 0, "free": 0},
            "rootfs": {
                "total": node.maxdisk,
                "used": root_used,
                "free": node.maxdisk - root_used,
                "avail": node.maxdisk - root_used,
            },
            "ksm": {"shared": 0},
        }

    def history(self, vmid: int) -> list[str]:
        """The guest's states in order, without times (tests)."""
        return [state for _, state in self.guests[vmid].history]
