"""The management API's answers and request bodies as pydantic models: what the OpenAPI
document (openapi.py) describes, and what tests validate real answers against.

The handlers build their JSON by hand for speed (a guest's text is cached per value); these
models say exactly what that JSON holds, and `extra="forbid"` keeps them honest: a field a
handler adds without a model fails the contract tests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

WakeStateName = Literal["asleep", "waking", "ready", "stopping", "failed"]
ClusterState = Literal["ok", "degraded", "failed", "pending"]


class Exact(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------- problem documents


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`), every error of the API.
    Some carry more members: `candidates` (409 ambiguous), `nodes` (404, the vmid lives on
    another node), `rule` / `parameter` (400), `upid` (a task), `retry_after_s`..."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description='always "about:blank": the status says what happened')
    title: str
    status: int = Field(ge=400, le=599)
    detail: str = Field(description="what went wrong, and how to fix it")


# ------------------------------------------------------------------------ guests and nodes


class Guest(Exact):
    """One LXC container or QEMU VM, as the inventory saw it at the last poll."""

    id: str = Field(description='type/vmid, unique within a cluster: "lxc/101"')
    cluster: str
    node: str
    vmid: int
    type: Literal["lxc", "qemu"]
    name: str
    status: str = Field(description="running, stopped, paused, unknown (node offline)...")
    template: bool
    ips: list[str]
    ip_source: str | None = Field(description="interfaces, agent, config, or null")
    tags: list[str]
    aliases: list[str]
    uptime: int
    lock: str | None
    pool: str | None
    hastate: str | None
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    disk: int
    maxdisk: int
    netin: int
    netout: int
    diskread: int
    diskwrite: int
    last_known: bool = Field(
        description="the node is offline: name, tags and template are kept from the last poll"
    )


class Node(Exact):
    cluster: str
    name: str
    aliases: list[str]
    status: str = Field(description="online, offline or unknown")
    ip: str | None
    cpu: float
    maxcpu: float
    mem: int
    maxmem: int
    uptime: int


class GuestList(RootModel[list[Guest]]):
    pass


class NodeList(RootModel[list[Node]]):
    pass


class GuestCandidate(Exact):
    """A guest a query matched, in a 409's `candidates`."""

    id: str
    ref: str
    cluster: str
    node: str
    vmid: int
    name: str
    status: str


class GuestLookup(Exact):
    match: Literal["ip", "host", "alias"]
    query: str
    route: str | None = Field(None, description="the route whose host matched (?host=)")
    guest: Guest


class NodeLookup(Exact):
    match: Literal["ip", "host", "alias"]
    query: str
    route: str | None = None
    node: Node


class Lookup(RootModel[GuestLookup | NodeLookup]):
    """The one guest or node a lookup found."""


# ---------------------------------------------------------------------------------- health


class ClusterHealth(Exact):
    name: str
    ok: bool
    state: ClusterState
    last_poll_age_s: float | None
    guests: int
    nodes: int
    error: str | None = None
    warnings: list[str] | None = None


class ConfigHealth(Exact):
    reload: Literal["failed"] | None = None
    errors: list[str] | None = None
    listen_errors: list[str] | None = None
    restart_needed: list[str] | None = None


class ProxyWorker(Exact):
    worker: int
    pid: int | None
    running: bool
    listening: bool
    port: int | None
    restarts: int
    error: str | None = None


class Health(Exact):
    status: Literal["ok", "degraded"]
    clusters: list[ClusterHealth]
    config: ConfigHealth | None = None
    proxy_workers: list[ProxyWorker] | None = None


# ---------------------------------------------------------------------------------- routes


class BeforeStopSettings(Exact):
    exec: list[str]
    grace_s: float
    timeout_s: float


class ReadyCheck(Exact):
    http: str | None = None
    tcp: bool | None = None
    udp: bool | None = None


class IdleSettings(Exact):
    timeout_s: float
    stop_method: str
    wake_timeout_s: float
    ready: ReadyCheck
    depends_on: list[str]
    shutdown_timeout_s: float
    retry_after_s: float
    before_stop: BeforeStopSettings | None


class ActivityReading(Exact):
    age_s: float
    active: bool
    held: bool
    detail: str


class Activity(Exact):
    source: str
    detail: str | None = None
    reading: ActivityReading | None = None


class BeforeStopProgress(Exact):
    step: Literal["command", "grace"]
    stopping_in_s: float | None


class ServedRoute(Exact):
    """A route the proxy serves: `host` for HTTP, `listen` and `protocol` for TCP/UDP."""

    host: list[str] | None = None
    listen: str | None = None
    protocol: Literal["tcp", "udp"] | None = None
    name: str = Field(description="its hosts joined by commas, or tcp:/udp:<listen>")
    guest: str = Field(description="the guest ref as configured")
    port: int
    scheme: Literal["http", "https"]
    path_prefix: str | None
    idle: IdleSettings | None
    activity: Activity
    state: WakeStateName
    stopping: BeforeStopProgress | None
    last_activity_at: float | None = Field(description="unix time the guest was last used")
    idle_stop_in_s: float | None = Field(
        description="seconds until idle-watch stops it; null while not counting down"
    )
    busy: bool = Field(description="held awake by an open connection or an awake dependent")
    wake_error: str | None = Field(description="the last failure while the state is failed")
    origin: Literal["config", "notes"]
    declared_by: str | None = Field(None, description="the guest whose notes declare it")


class RouteProblem(Exact):
    """A route a guest's notes declare but got wrong: not served."""

    origin: Literal["notes"]
    declared_by: str
    guest: str
    guest_name: str
    error: str


class RouteList(RootModel[list[ServedRoute | RouteProblem]]):
    pass


# ---------------------------------------------------------------------------- power, wake


class PowerAnswer(Exact):
    """202 (sent) or, with ?wait=1, 200 once the task ended well."""

    upid: str
    guest: str
    ref: str
    node: str
    action: Literal["start", "stop", "shutdown", "reboot", "suspend", "resume"]
    exitstatus: str | None = Field(None, description="with ?wait=1")
    duration_s: float | None = Field(None, description="with ?wait=1")


class WakeLine(Exact):
    """One NDJSON line of a wake: a stage, then a last one with state ready or failed."""

    state: WakeStateName
    step: str
    elapsed_s: float
    already_ready: bool | None = None
    error: str | None = None
    retry_after_s: float | None = None


# ----------------------------------------------------------------------------------- exec


class ExecRequest(Exact):
    """The body of POST /exec/...: an argv (no shell parses it) and an optional timeout."""

    argv: list[str] = Field(min_length=1, max_length=256)
    timeout: float | None = Field(None, gt=0, le=3600, description="seconds")


class ExecLine(Exact):
    """One NDJSON line of ?format=json: output, then the exit status (or an error)."""

    output: str | None = None
    exit_status: int | None = None
    error: str | None = None
    duration_s: float | None = None


# ----------------------------------------------------------------------- who, audit trail


class ApiIndex(Exact):
    """GET /api/v1/: where to start."""

    openapi: str
    dashboard: str
    health: str
    events: str


class Me(Exact):
    """The token asking: its name, scopes and guest allowlist as configured."""

    name: str
    scopes: list[str]
    guests: list[str]


class AuditEntry(Exact):
    token: str
    action: str
    guest: str = Field(description="cluster:vmid, a node, or the ref a refused request gave")
    detail: dict[str, Any]
    result: str
    duration_s: float
    at: float


class ChainHead(Exact):
    seq: int
    hash: str


class AuditChain(Exact):
    state: Literal["ok", "broken", "unreadable", "unchained"]
    verified: bool | None
    file: str | None
    lines: int
    continues_seq: int
    head: ChainHead
    error: str | None
    checked_at: float


class AuditTrail(Exact):
    entries: list[AuditEntry] = Field(description="newest first")
    chain: AuditChain


class WebhookFailure(Exact):
    event: str
    guest: str | None
    at: float
    attempts: int
    status: int | None
    error: str


class Webhook(Exact):
    """A configured webhook's deliveries: its host only, never the URL's path or a secret."""

    name: str
    format: str
    host: str
    events: list[str]
    delivered: int
    failed: int
    attempts: int
    dropped: int
    queued: int
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    recent_failures: list[WebhookFailure] = Field(description="newest first")


class WebhookList(RootModel[list[Webhook]]):
    pass


# ---------------------------------------------------------------------------------- stats


class GuestStats(Exact):
    time: float
    ref: str
    vmid: int
    name: str
    status: str
    cpu: float
    cpu_percent: float
    cpus: float
    mem: int
    maxmem: int
    mem_percent: float
    netin: int
    netout: int
    diskread: int
    diskwrite: int
    uptime: int
    netin_rate: float | None
    netout_rate: float | None
    diskread_rate: float | None
    diskwrite_rate: float | None


class NodeStats(Exact):
    time: float
    node: str
    cpu: float
    cpu_percent: float
    cpus: int
    wait: float
    memory: dict[str, int]
    mem_percent: float
    swap: dict[str, int]
    rootfs: dict[str, int]
    rootfs_percent: float
    loadavg: list[float]
    uptime: int
    pveversion: str
    kversion: str
    cpu_model: str


class StatsError(Exact):
    """A stream event when a sample could not be had; the stream goes on."""

    time: float
    error: str
    status: int


# ---------------------------------------------------------------------------- integrations


class TraefikConfig(RootModel[dict[str, Any]]):
    """Traefik's dynamic configuration (`http`, `tcp`, `udp` routers and services)."""


class PrometheusTargetGroup(Exact):
    targets: list[str]
    labels: dict[str, str]


class PrometheusTargets(RootModel[list[PrometheusTargetGroup]]):
    pass


class AnsibleInventory(RootModel[dict[str, Any]]):
    """`--list`: `_meta.hostvars`, `all.children`, and a `{"hosts": [...]}` per group; with
    ?host=, that host's variables (`{}` for a host the inventory does not have)."""


# ---------------------------------------------------------------------------------- events


class HelloEvent(Exact):
    server_time: float
    clusters: list[str]


class PollEvent(Exact):
    cluster: str
    ok: bool
    state: ClusterState
    error: str | None
    guests: int
    nodes: int
    at: float


class GuestsEvent(Exact):
    cluster: str
    changed: list[Guest]
    removed: list[str] = Field(description="cluster:vmid refs")
    at: float


class GuestStatsPoint(Exact):
    cpu: float
    mem: int
    maxmem: int


class StatsEvent(Exact):
    cluster: str
    at: float
    guests: dict[str, GuestStatsPoint] = Field(description="by cluster:vmid")


class WakeEvent(Exact):
    guest: str
    routes: list[str]
    state: WakeStateName
    step: str
    error: str | None
    at: float


class IdleEvent(Exact):
    guest: str
    event: Literal["idle_stop", "idle_stop_failed", "before_stop", "before_stop_abandoned"]
    detail: str | None
    at: float


class RoutesEvent(Exact):
    at: float


class WebhookEvent(Exact):
    name: str
    event: str
    ok: bool
    status: int | None
    error: str | None
    attempt: int
    at: float


class OverflowEvent(Exact):
    reason: str


EVENTS: dict[str, type[BaseModel]] = {
    "hello": HelloEvent,
    "poll": PollEvent,
    "guests": GuestsEvent,
    "stats": StatsEvent,
    "wake": WakeEvent,
    "idle": IdleEvent,
    "routes": RoutesEvent,
    "webhook": WebhookEvent,
    "overflow": OverflowEvent,
}
"""Each SSE `event:` kind of GET /api/v1/events and the `data:` object it carries."""
