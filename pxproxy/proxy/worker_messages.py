"""What the daemon and its proxy workers tell each other: one JSON object per line, the
daemon's on the worker's stdin, the worker's on its stdout. Pure: no sockets, no processes.

Daemon to worker:
- `config`: the proxy settings, the route set (in the daemon's order, so a route's position
  is the same on both sides), the address the proxy listens on, the relay listener and its
  secret, and a TLS generation that changes when the certificates were reloaded;
- `ready`: per route, the upstream a worker may forward to itself, or null for "relay it";
- `drain`: stop accepting, finish within the grace, exit.

Worker to daemon:
- `listening`, or `failed` with the reason, after each `config` that moved the listener;
- `report`: per route, requests seen and connections open since the last report, and the
  worker's counters as they stand (cumulative, so a lost line loses nothing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config.models import ProxyConfig, RouteConfig
from .stats import ProxyStats, RouteStats
from .upstream import Upstream


class MessageError(ValueError):
    """A line that is not a message of this protocol."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    proxy: ProxyConfig
    routes: tuple[RouteConfig, ...]
    listen: tuple[str, int] | None  # where the daemon's proxy listener is bound, if open
    relay: tuple[str, int]
    secret: str
    tls_generation: int = 0
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class Direct:
    """A route a worker serves itself: the guest is ready at `upstream`. `watched`: the
    route has idle-watch, so its activity and open connections go back to the daemon."""

    upstream: Upstream
    watched: bool


# Per route, in the config's order: Direct, or None (relay to the daemon).
Readiness = tuple[Direct | None, ...]


@dataclass(slots=True)
class Report:
    activity: dict[str, int] = field(default_factory=dict)  # route name -> requests, bytes
    holds: dict[str, int] = field(default_factory=dict)  # route name -> open now
    stats: ProxyStats = field(default_factory=ProxyStats)


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_config(config: WorkerConfig) -> bytes:
    return _line(
        {
            "kind": "config",
            "proxy": config.proxy.model_dump(mode="json"),
            "routes": [r.model_dump(mode="json", exclude_unset=True) for r in config.routes],
            "listen": list(config.listen) if config.listen else None,
            "relay": list(config.relay),
            "secret": config.secret,
            "tls_generation": config.tls_generation,
            "log_level": config.log_level,
        }
    )


def encode_ready(ready: Readiness) -> bytes:
    return _line(
        {
            "kind": "ready",
            "routes": [None if d is None else [*d.upstream, d.watched] for d in ready],
        }
    )


def encode_drain(grace_s: float) -> bytes:
    return _line({"kind": "drain", "grace": grace_s})


def encode_listening(port: int | None, error: str | None = None) -> bytes:
    if error is not None:
        return _line({"kind": "failed", "error": error})
    return _line({"kind": "listening", "port": port})


def encode_report(report: Report) -> bytes:
    return _line(
        {
            "kind": "report",
            "activity": report.activity,
            "holds": report.holds,
            "stats": {name: _route_stats(s) for name, s in report.stats.routes.items()},
        }
    )


def _route_stats(stats: RouteStats) -> dict[str, Any]:
    return {
        "status": {str(k): v for k, v in stats.by_status.items()},
        "buckets": stats.buckets,
        "count": stats.upstream_count,
        "sum": stats.upstream_sum,
        "open": stats.open,
    }


def decode(line: bytes) -> dict[str, Any]:
    """The message on one line, its `kind` checked to be a string; MessageError if not."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MessageError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise MessageError("not a message object")
    return message


def config_of(message: Mapping[str, Any]) -> WorkerConfig:
    try:
        listen = message["listen"]
        relay = message["relay"]
        return WorkerConfig(
            proxy=ProxyConfig.model_validate(message["proxy"]),
            routes=tuple(RouteConfig.model_validate(r) for r in message["routes"]),
            listen=None if listen is None else (str(listen[0]), int(listen[1])),
            relay=(str(relay[0]), int(relay[1])),
            secret=str(message["secret"]),
            tls_generation=int(message["tls_generation"]),
            log_level=str(message["log_level"]),
        )
    except (KeyError, TypeError, IndexError, ValueError, OverflowError) as exc:
        raise MessageError(f"invalid config message: {exc}") from None


def ready_of(message: Mapping[str, Any], routes: int) -> Readiness:
    try:
        entries = message["routes"]
        if len(entries) != routes:
            raise MessageError(f"ready for {len(entries)} routes, the config has {routes}")
        out: list[Direct | None] = []
        for entry in entries:
            if entry is None:
                out.append(None)
                continue
            if not isinstance(entry, list) or len(entry) != 6:
                raise MessageError(f"a ready entry is a list of 6, not {entry!r}")
            guest, name, host, port, scheme, watched = entry
            if not isinstance(watched, bool) or not isinstance(port, int):
                raise MessageError(f"invalid ready entry {entry!r}")
            if not 0 < port < 65536:
                raise MessageError(f"port {port} out of range")
            upstream = Upstream(str(guest), str(name), str(host), port, str(scheme))
            out.append(Direct(upstream, watched))
        return tuple(out)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"invalid ready message: {exc}") from None


def report_of(message: Mapping[str, Any]) -> Report:
    try:
        stats = ProxyStats()
        for name, raw in message["stats"].items():
            route = RouteStats()
            route.by_status = {int(k): int(v) for k, v in raw["status"].items()}
            buckets = [int(b) for b in raw["buckets"]]
            if len(buckets) != len(route.buckets):
                raise MessageError("wrong number of histogram buckets")
            route.buckets = buckets
            route.upstream_count = int(raw["count"])
            route.upstream_sum = float(raw["sum"])
            route.open = int(raw["open"])
            stats.routes[str(name)] = route
        return Report(
            activity={str(k): int(v) for k, v in message["activity"].items()},
            holds={str(k): int(v) for k, v in message["holds"].items()},
            stats=stats,
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise MessageError(f"invalid report: {exc}") from None
