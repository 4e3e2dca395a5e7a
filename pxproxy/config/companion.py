"""Companion-mode settings: the DNS responder, the integration endpoints and the activity
source of a route (how idle-watch learns of traffic that another proxy carries)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .addresses import check_address
from .durations import Seconds
from .listen_marker import TCP, UDP

_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_@.-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_zone(value: str) -> str:
    zone = value.strip().rstrip(".").lower()
    labels = zone.split(".")
    if not zone or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a DNS zone name such as pve.internal")
    return zone


def _check_address(value: str) -> str:
    # The listeners' form, with a host always written: these are not bind-everything
    # listeners (dns.listen) or are what other proxies connect to (proxy_address).
    check_address(value)
    host, _, _ = value.strip().rpartition(":")
    if not host:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a name (letters, digits, _ @ . -)")
    return value


DnsListen = Annotated[str, AfterValidator(_check_address), UDP, TCP]
Name = Annotated[str, AfterValidator(_check_name)]


class DnsRateLimit(_Strict):
    # Queries per second per client address, with this burst; over it: dropped and counted.
    per_client: float = Field(default=200.0, gt=0, le=1_000_000)
    burst: int = Field(default=400, ge=1, le=1_000_000)


class DnsConfig(_Strict):
    """`dns:`: an authoritative responder for one zone (off when the key is absent)."""

    listen: DnsListen = "127.0.0.1:5353"
    zone: Annotated[str, AfterValidator(_check_zone)] = "pve.internal"
    ttl: Annotated[Seconds, Field(ge=0, le=86400)] = 2.0
    # Route hosts that fall inside the zone are answered too (as the route's guest).
    route_hosts: bool = True
    rate_limit: DnsRateLimit = DnsRateLimit()


class TraefikTls(_Strict):
    cert_resolver: Name | None = None
    # Certificates a Traefik store already has are used when no resolver is named.
    domains: tuple[str, ...] = ()


class TraefikOptions(_Strict):
    """What each generated router carries (`integrations.traefik`)."""

    entrypoints: tuple[Name, ...] = ("web",)
    tls: TraefikTls | None = None
    middlewares: tuple[Name, ...] = ()
    # TCP routes: the entrypoint of each, by the route's listen port; default `tcp-<port>`.
    tcp_entrypoints: dict[int, Name] = {}
    # UDP routes likewise; default `udp-<port>`.
    udp_entrypoints: dict[int, Name] = {}
    # Traefik's Prometheus endpoint, for routes with `activity: {source: traefik}`.
    metrics_url: str | None = None
    metrics_interval: Annotated[Seconds, Field(gt=0, le=3600)] = 5.0


class IntegrationsConfig(_Strict):
    """`integrations:`: the endpoints other programs poll."""

    # Serve /integrations/* without a token (only on a loopback API listener).
    public: bool = False
    # Where another proxy reaches pxproxy's proxy listener while a guest sleeps; default: the
    # proxy listener's address (127.0.0.1 for a wildcard bind).
    proxy_address: Annotated[str, AfterValidator(_check_address)] | None = None
    traefik: TraefikOptions = TraefikOptions()


def _check_pattern(value: str) -> str:
    text = value.strip().rstrip(".").lower()
    label = text[2:] if text.startswith("*.") else text
    if text != "*" and (not label or not re.fullmatch(r"[a-z0-9.-]+", label)):
        raise ValueError(f"{value!r} is not a host name, *.domain or *")
    return text


HostPattern = Annotated[str, AfterValidator(_check_pattern)]


class NotesPolicy(_Strict):
    """`notes:`: what guests may declare in their Proxmox notes. Whoever may edit a guest's
    notes (VM.Config.Options) may route hosts to it: say which."""

    enabled: bool = True
    # Host patterns a declared route may use: exact names, `*.apps.example.com` (any name
    # below it), or `*` (any host no config route has).
    hosts: tuple[HostPattern, ...] = ("*",)
    # Whether declared TCP routes may open listeners on this machine.
    tcp: bool = False
    # Likewise for declared UDP routes (`protocol: udp`), each a socket open to anyone.
    udp: bool = False

    def allows_host(self, host: str) -> bool:
        name = host.rstrip(".").lower()
        for pattern in self.hosts:
            if pattern == "*" or pattern == name:
                return True
            if pattern.startswith("*.") and (
                name.endswith(pattern[1:]) or name == pattern  # `*.x` itself as a wildcard
            ):
                return True
        return False


ActivitySource = Literal["proxy", "traefik", "traffic"]


class ActivityConfig(_Strict):
    """How idle-watch learns that a route is in use. `proxy`: pxproxy's own proxy sees the
    traffic (the default). `traefik`: Traefik's metrics for the route's service. `traffic`:
    the guest's own netin+netout growth per poll, above `threshold` bytes."""

    source: ActivitySource = "proxy"
    threshold: int = Field(default=4096, ge=0)
    # The Traefik service to watch; default: the one pxproxy generates for the route.
    service: Name | None = None
