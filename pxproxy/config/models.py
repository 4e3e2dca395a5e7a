"""The configuration schema (pydantic v2). Unknown keys are errors; secrets never print."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from ..streams.validation import validate_argv
from ..webhooks.config import WebhookConfig, check_unique
from .addresses import check_address
from .addresses import split_address as split_address  # re-exported: models is where callers look
from .allowlists import check_guest_entry, check_path_prefix
from .companion import ActivityConfig, DnsConfig, IntegrationsConfig, NotesPolicy
from .durations import Seconds
from .listen_marker import STREAM as STREAM_LISTENER
from .listen_marker import TCP as TCP_LISTENER
from .listener_tls import ProxyTlsConfig
from .node_names import check_node_alias, check_node_key
from .pages import PagesConfig, RoutePage
from .urls import check_cluster_url

_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
_TOKEN_ID_RE = re.compile(r"^[^\s@!]+@[A-Za-z0-9._-]+![A-Za-z][A-Za-z0-9._-]*$")
_USER_RE = re.compile(r"^[^\s@!:]+@[A-Za-z0-9._-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _normalise_fingerprint(value: str | None) -> str | None:
    """Accept PVE's `AA:BB:...` form as well as bare hex; store lowercase hex."""
    if value is None:
        return None
    hexed = value.replace(":", "").strip().lower()
    if not _FINGERPRINT_RE.match(hexed):
        raise ValueError("must be a SHA-256 fingerprint: 64 hex digits, colons allowed")
    return hexed


class TlsConfig(Strict):
    verify: bool = True
    ca_file: str | None = None
    fingerprint: Annotated[str | None, AfterValidator(_normalise_fingerprint)] = None


# Listener(...) lets the clash check (config/listener_clashes.py) find every listening address.
ListenAddress = Annotated[str, AfterValidator(check_address), TCP_LISTENER]
# A route's `listen`: TCP or UDP, by the route's `protocol`.
StreamListenAddress = Annotated[str, AfterValidator(check_address), STREAM_LISTENER]


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network like 10.0.0.0/8: {exc}") from None
    return value


Networks = Annotated[tuple[str, ...], AfterValidator(_check_networks)]


class IpPolicy(Strict):
    """Which resolved addresses to keep.

    Default: every family and range, minus loopback and link-local."""

    families: tuple[Literal["ipv4", "ipv6"], ...] = ("ipv4", "ipv6")
    include: Networks = ()
    exclude: Networks = ()
    # Keep 127.0.0.0/8 addresses other than 127.0.0.1 (every guest's own lo); the lab's guests
    # live on such addresses. Off for real clusters.
    loopback: bool = False


class ClusterConfig(Strict):
    name: str | None = None
    url: str
    token_id: str | None = None
    secret: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    poll_interval: Seconds = 3.0
    timeout: Seconds = 10.0
    backoff_max: Seconds = 30.0
    resolve_concurrency: int = Field(default=8, ge=1, le=256)
    ip_refresh: Seconds = 300.0
    node_refresh: Seconds = 60.0
    # Notes of guests tagged `pxproxy` are read again this often (and whenever their tags or
    # status change); their routes are parsed again only when the config digest changes.
    notes_refresh: Seconds = Field(default=30.0, ge=0.2, le=86400)
    ips: IpPolicy = IpPolicy()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_cluster_url(value)

    @field_validator("token_id")
    @classmethod
    def _token_id(cls, value: str | None) -> str | None:
        if value is not None and not _TOKEN_ID_RE.match(value):
            raise ValueError("must look like user@realm!tokenname")
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is not None and not _USER_RE.match(value):
            raise ValueError("must look like root@pam")
        return value

    @field_validator("poll_interval", "timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.05:
            raise ValueError("must be at least 50ms")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> ClusterConfig:
        if (self.token_id is None) != (self.secret is None):
            raise ValueError("token_id and secret go together")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.token_id is None and self.username is None:
            raise ValueError("needs credentials: token_id + secret, or username + password")
        return self


def _ref_text(value: object) -> object:
    """A vmid written as a YAML number (`guest: 101`) is a guest ref like any other."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


GuestRef = Annotated[str, BeforeValidator(_ref_text)]


class GuestExtras(Strict):
    aliases: tuple[str, ...] = ()


class NodeExtras(Strict):
    aliases: tuple[Annotated[str, AfterValidator(check_node_alias)], ...] = ()


NodeKey = Annotated[str, AfterValidator(check_node_key)]


class ListenConfig(Strict):
    proxy: ListenAddress = "0.0.0.0:8080"
    api: ListenAddress = "127.0.0.1:8081"


# node-exec: commands on the hypervisor itself; only tokens that list it have it.
Scope = Literal["read", "power", "exec", "node-exec"]
AllowlistEntry = Annotated[str, BeforeValidator(_ref_text), AfterValidator(check_guest_entry)]
PathPrefix = Annotated[str, AfterValidator(check_path_prefix)]


class ApiToken(Strict):
    name: str
    secret: SecretStr
    scopes: tuple[Scope, ...] = ("read",)
    # Each entry allows at most one guest: `*`, cluster:vmid, or a ref or glob that matches
    # exactly one guest in all clusters (config/allowlists.py, api/allowlist.py).
    guests: tuple[AllowlistEntry, ...] = ("*",)
    # Path prefixes this token may tail (/tail), matched on path boundaries; None: any
    # absolute path, []: none.
    paths: tuple[PathPrefix, ...] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("letters, digits, '.', '_' or '-', at most 63")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value


class ApiConfig(Strict):
    tokens: tuple[ApiToken, ...] = ()
    # A request head (request line and every header line) over this many bytes, or with more
    # header lines than max_headers, is answered 431 and the connection closed.
    max_header_size: int = Field(default=16384, ge=1024, le=1048576)
    max_headers: int = Field(default=100, ge=1, le=1000)
    # Time a client has to send a complete request head, from connecting or from the first
    # byte of a later request on the connection.
    header_timeout: Seconds = Field(default=10.0, ge=0.1, le=3600)
    # An idle connection between requests is closed after this long.
    keepalive_timeout: Seconds = Field(default=15.0, ge=0.1, le=3600)
    # Concurrent connections from one client address; more are answered 503 and closed.
    max_connections_per_client: int = Field(default=64, ge=1, le=100000)

    @model_validator(mode="after")
    def _unique(self) -> ApiConfig:
        names = [t.name for t in self.tokens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"token names must be unique: {', '.join(dupes)}")
        return self


class ReadyCheck(Strict):
    http: str | None = None


StopMethod = Literal["shutdown", "stop", "suspend", "hibernate"]

# A grace of 0 is a real choice (a `save-all` right before the stop); the command's own
# timeout is bounded so that a hung command cannot keep a guest up for long.
BEFORE_STOP_GRACE_MAX_S = 3600.0
BEFORE_STOP_TIMEOUT_MAX_S = 600.0


def _before_stop_argv(value: object) -> object:
    """The rules POST /exec applies to an argv (streams/validation.py): a command the API
    would refuse is a config error."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError(
            "must be a list of strings: the command and its arguments, "
            'e.g. [rcon-cli, say, "Server stops in 60 s"]'
        )
    return tuple(validate_argv(value))


class BeforeStop(Strict):
    """A command run in the guest before an idle stop (players warned), then a wait."""

    exec: Annotated[tuple[str, ...], BeforeValidator(_before_stop_argv)]
    # After the command ended; activity meanwhile keeps the guest up.
    grace: Seconds = Field(default=60.0, ge=0, le=BEFORE_STOP_GRACE_MAX_S)
    timeout: Seconds = Field(default=30.0, gt=0, le=BEFORE_STOP_TIMEOUT_MAX_S)


class IdleConfig(Strict):
    timeout: Seconds = 900.0
    stop_method: StopMethod = "shutdown"
    wake_timeout: Seconds = 120.0
    ready: ReadyCheck = ReadyCheck()
    depends_on: tuple[GuestRef, ...] = ()
    # A graceful shutdown that takes longer than this is turned into a stop.
    shutdown_timeout: Seconds = 60.0
    # After a failed start, requests get the error at once for this long (no restart storm).
    retry_after: Seconds = 30.0
    before_stop: BeforeStop | None = None


class UdpConfig(Strict):
    """`udp:` of a UDP route: its client sessions and what it holds while the guest wakes."""

    # A session (one client address) with no datagram either way for this long is closed,
    # and no longer keeps the guest awake.
    session_timeout: Seconds = Field(default=60.0, ge=0.05, le=86400)
    # Clients at once; a datagram from one more client is dropped (and counted). Each
    # session is a socket (a file descriptor) to the guest, and UDP senders are easy to forge.
    max_sessions: int = Field(default=256, ge=1, le=65536)
    # Datagrams held while the guest wakes, in count and in bytes (all clients together);
    # more are dropped (and counted). Game clients resend their handshake anyway.
    buffer_datagrams: int = Field(default=256, ge=1, le=65536)
    buffer_bytes: int = Field(default=262144, ge=1500, le=67108864)


DEFAULT_UDP = UdpConfig()


def _hosts(value: object) -> object:
    return (value,) if isinstance(value, str) else value


class RouteConfig(Strict):
    host: Annotated[tuple[str, ...] | None, BeforeValidator(_hosts)] = None
    listen: StreamListenAddress | None = None
    # Of a `listen:` route: a TCP relay per connection, or UDP with a session per client.
    protocol: Literal["tcp", "udp"] = "tcp"
    # Of a UDP route (default: DEFAULT_UDP).
    udp: UdpConfig | None = None
    guest: GuestRef
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    path_prefix: str | None = None
    idle: IdleConfig | None = None
    # How idle-watch learns of traffic another proxy carries (config/companion.py).
    activity: ActivityConfig = ActivityConfig()
    # Title, logo and accent of the route's loading and error pages (config/pages.py).
    page: RoutePage | None = None

    @model_validator(mode="after")
    def _kind(self) -> RouteConfig:
        if (self.host is None) == (self.listen is None):
            raise ValueError("a route has either host (HTTP) or listen (TCP or UDP)")
        if self.host is not None and "protocol" in self.model_fields_set:
            raise ValueError("protocol is for listen routes (TCP or UDP), not host routes")
        if self.listen is not None and self.page is not None:
            raise ValueError("page settings are for host routes: listen routes show no pages")
        if self.udp is not None and self.protocol != "udp":
            raise ValueError("udp settings are for routes with protocol: udp")
        if self.host is not None and not self.host:
            raise ValueError("host needs at least one name")
        for host in self.host or ():
            label = host[2:] if host.startswith("*.") else host
            # fullmatch: `$` alone would let a trailing newline through.
            if not label or not re.fullmatch(r"[A-Za-z0-9.-]+", label):
                raise ValueError(f"host {host!r} is not a hostname or *.domain")
        return self


DEFAULT_HEALTH_AGENTS = (
    "kube-probe",
    "Uptime-Kuma",
    "UptimeRobot",
    "Blackbox Exporter",
    "Prometheus",
    "Gatus",
    "Pingdom",
    "StatusCake",
    "HetrixTools",
    "Consul Health Check",
)


class HealthCheckRules(Strict):
    """Requests matching any rule never wake a guest and never count as activity."""

    user_agents: tuple[str, ...] = DEFAULT_HEALTH_AGENTS  # substrings, case-insensitive
    paths: tuple[str, ...] = ()  # exact paths, or prefixes ending in "*"
    sources: Networks = ()  # client networks, e.g. [10.0.0.5/32]


class ProxyConfig(Strict):
    # Clients whose X-Forwarded-*/Forwarded headers are believed (your outer proxy); from
    # anyone else they are replaced.
    trusted_proxies: Networks = ()
    health_checks: HealthCheckRules = HealthCheckRules()
    connect_timeout: Seconds = 5.0
    # An upstream that sends nothing for this long is given up on (streams that send
    # something now and then, like SSE, live on).
    read_timeout: Seconds = 300.0
    # Time a client has to send its request line and headers.
    header_timeout: Seconds = 30.0
    keepalive_timeout: Seconds = 75.0
    max_body_size: int = Field(default=2**31, ge=0)  # bytes; 0: no limit
    # Bytes of a whole request head (request line and header lines); 431 above.
    max_header_size: int = Field(default=16384, ge=1024, le=1048576)
    max_headers: int = Field(default=100, ge=1, le=1000)  # header lines per request; 431 above
    # TLS on the listener (config/listener_tls.py); None: plain HTTP.
    tls: ProxyTlsConfig | None = None
    # Processes accepting on the proxy port (SO_REUSEPORT), the daemon one of them; the
    # others (proxy/worker.py) leave wakes to the daemon. A restart applies a change.
    workers: int = Field(default=1, ge=1, le=64)
    # The loading and error pages' theme and template (config/pages.py).
    pages: PagesConfig = PagesConfig()


class AuditConfig(Strict):
    # Hash-chained JSON lines (pxproxy/audit/); without a path, the `pxproxy.audit` logger.
    path: str | None = Field(default=None, min_length=1)


class StateConfig(Strict):
    """What survives a restart (pxproxy/state/): an SQLite file."""

    # None: /var/lib/pxproxy/state.db where that directory exists, else
    # $XDG_STATE_HOME/pxproxy/state.db (~/.local/state/pxproxy/state.db).
    path: str | None = Field(default=None, min_length=1)
    enabled: bool = True
    # Each route's last activity is saved at most this often (it changes on every request).
    activity_interval: Seconds = Field(default=30.0, ge=1, le=86400)


class Config(Strict):
    proxmox: tuple[ClusterConfig, ...]
    listen: ListenConfig = ListenConfig()
    proxy: ProxyConfig = ProxyConfig()
    guests: dict[GuestRef, GuestExtras] = {}
    api: ApiConfig = ApiConfig()
    routes: tuple[RouteConfig, ...] = ()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # On SIGTERM: streams end at once, requests in flight get this long to finish.
    shutdown_grace: Seconds = Field(default=10.0, ge=0, le=3600)
    state: StateConfig = StateConfig()
    # Node aliases, keyed `pve1` (any cluster) or `home:pve1` (config/node_names.py).
    nodes: dict[NodeKey, NodeExtras] = {}
    audit: AuditConfig = AuditConfig()
    dns: DnsConfig | None = None
    integrations: IntegrationsConfig = IntegrationsConfig()
    notes: NotesPolicy = NotesPolicy()
    # Events out (pxproxy/webhooks/): wakes, idle stops, degraded clusters.
    webhooks: Annotated[tuple[WebhookConfig, ...], AfterValidator(check_unique)] = ()

    # A field validator (not Field(min_length=1) or a model validator): its errors carry the
    # key path "proxmox", and it only runs when every entry is valid, so an invalid entry is
    # not also reported as "at least 1 item after validation".
    @field_validator("proxmox")
    @classmethod
    def _clusters(cls, value: tuple[ClusterConfig, ...]) -> tuple[ClusterConfig, ...]:
        if not value:
            raise ValueError("needs at least one cluster")
        names = [c.name for c in value]
        unnamed = [f"proxmox[{i}]" for i, n in enumerate(names) if n is None]
        if len(value) > 1 and unnamed:
            raise ValueError(
                f"with several clusters each needs a name; missing in {', '.join(unnamed)}"
            )
        dupes = sorted({n for n in names if n is not None and names.count(n) > 1})
        if dupes:
            raise ValueError(f"cluster names must be unique: {', '.join(dupes)}")
        return value

    def cluster_names(self) -> list[str]:
        """Each cluster's label: its name, else the host of its URL."""
        return [c.name or cluster_label(c.url) for c in self.proxmox]


def cluster_label(url: str) -> str:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return host.rsplit(":", 1)[0].strip("[]") if ":" in host else host
