"""Checks across keys that the schema cannot express, run on every part of the file that parsed.

They read the raw data through `RawSection`, so a broken route hides nothing about the others:
one run of `pxproxy check` or `pxproxy run` shows every problem.

- listener clashes (config/listener_clashes.py);
- `depends_on` self-references and cycles, by ref text (config/dependencies.py);
- route hosts given twice: hosts match without regard to case or a trailing dot, and the first
  route keeps a host, so the second would never get a request for it;
- durations that make no sense: waits of 0 (see `_POSITIVE`);
- contradictory TLS settings, and a CA file that cannot be read;
- the proxy listener's certificate and key files: readable, parsed, and each key the one of
  its certificate (config/certificates.py);
- routes whose activity source needs settings the file lacks (config/activity_sources.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

from .activity_sources import activity_problems
from .certificates import file_problems
from .dependencies import dependency_problems, route_edges
from .listener_clashes import clash_problems, find_listeners
from .models import Config
from .problems import Problem
from .raw_view import RawSection

# (section, key, what 0 would mean). Negative durations are refused by the duration parser;
# retry_after, shutdown_grace and the keep-alive timeouts may be 0 (no wait is a real choice),
# and poll_interval and timeout have their own floor of 50ms.
_POSITIVE: tuple[tuple[str, str, str], ...] = (
    ("idle", "timeout", "0 would stop the guest right after every request"),
    ("idle", "wake_timeout", "0 would fail every wake before the guest could start"),
    (
        "idle",
        "shutdown_timeout",
        "0 would turn every graceful shutdown into a hard stop (stop_method: stop says that)",
    ),
    ("proxy", "connect_timeout", "0 would give an upstream no time to accept a connection"),
    ("proxy", "read_timeout", "0 would give an upstream no time to answer"),
    ("proxy", "header_timeout", "0 would give a client no time to send its request"),
    ("proxmox", "backoff_max", "0 would retry a failing cluster without any pause"),
)


def semantic_problems(data: Mapping[str, object]) -> list[Problem]:
    root = RawSection(Config, data, ())
    routes = list(root.items("routes"))
    return [
        *clash_problems(list(find_listeners(root))),
        *dependency_problems(route_edges(_route_refs(routes))),
        *host_problems(routes),
        *duration_problems(root, routes),
        *tls_problems(root.items("proxmox")),
        *listener_tls_problems(root),
        *activity_problems(root, routes),
    ]


def _route_refs(routes: Iterable[RawSection]) -> list[tuple[str, str, tuple[str, ...]]]:
    out: list[tuple[str, str, tuple[str, ...]]] = []
    for route in routes:
        guest = route.typed("guest", str)
        idle = route.section("idle")
        depends_on = idle.texts("depends_on") if idle is not None else None
        if guest is not None and idle is not None and depends_on:
            out.append((idle.path("depends_on"), guest, depends_on))
    return out


def host_key(host: str) -> str:
    """How the proxy compares hosts (routing/hosts.py): case and a trailing dot ignored."""
    return host.rstrip(".").lower()


def host_problems(routes: Iterable[RawSection]) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, tuple[str, str, str, object]] = {}  # key -> (path, host, guest, route loc)
    for route in routes:
        hosts = route.texts("host")
        if not hosts:
            continue
        written_as_list = isinstance(route.data.get("host"), list)
        guest = route.typed("guest", str) or "?"
        for j, host in enumerate(hosts):
            path = route.path("host", j) if written_as_list else route.path("host")
            known = first.get(host_key(host))
            if known is None:
                first[host_key(host)] = (path, host, guest, route.loc)
                continue
            where, earlier, earlier_guest, earlier_loc = known
            if earlier_loc == route.loc:
                problems.append(Problem(path, f"{host!r} is listed twice in this route"))
                continue
            problems.append(
                Problem(
                    path,
                    f"{host!r} is already {where} ({earlier!r} -> {earlier_guest}): hosts match "
                    f"without regard to case or a trailing dot and the first route keeps "
                    f"a host, so this route would never get a request for it",
                )
            )
    return problems


def _sections(root: RawSection, routes: list[RawSection], kind: str) -> list[RawSection]:
    if kind == "idle":
        found = (route.section("idle") for route in routes)
        return [idle for idle in found if idle is not None]
    if kind == "proxmox":
        return list(root.items("proxmox"))
    section = root.section(kind)
    return [section] if section is not None else []


def duration_problems(root: RawSection, routes: list[RawSection]) -> list[Problem]:
    problems: list[Problem] = []
    for kind, name, why in _POSITIVE:
        for section in _sections(root, routes, kind):
            seconds = section.number(name)
            if seconds is not None and seconds <= 0:
                problems.append(Problem(section.path(name), f"must be more than 0s: {why}"))
    return problems


def tls_problems(clusters: Iterable[RawSection]) -> list[Problem]:
    problems: list[Problem] = []
    for cluster in clusters:
        tls = cluster.section("tls")
        if tls is None:
            continue
        verify = tls.typed("verify", bool)
        fingerprint = tls.typed("fingerprint", str)
        ca_file = tls.typed("ca_file", str)
        if verify is False and fingerprint:
            problems.append(
                Problem(
                    tls.path("verify"),
                    f"false contradicts {tls.path('fingerprint')}: a pinned fingerprint is "
                    "always checked, so verify: false would not turn checking off; remove "
                    "verify: false to pin, or the fingerprint to accept any certificate",
                )
            )
        if verify is False and ca_file:
            problems.append(
                Problem(
                    tls.path("verify"),
                    f"false contradicts {tls.path('ca_file')}: with verify: false the CA file "
                    "is never read; remove one of them",
                )
            )
        if fingerprint and ca_file:
            problems.append(
                Problem(
                    tls.path("ca_file"),
                    f"is not used with {tls.path('fingerprint')}: the pin replaces chain "
                    "verification; remove one of them",
                )
            )
        used = verify is not False and not fingerprint
        if ca_file and used and (trouble := _ca_file_trouble(ca_file)) is not None:
            problems.append(Problem(tls.path("ca_file"), trouble))
    return problems


def _ca_file_trouble(path: str) -> str | None:
    """Why the client could not load this CA file (it would fail at start-up), else None."""
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:  # an OSError too: first
        return f"{path} holds no usable PEM certificate: {exc.reason or exc}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    return None


def listener_tls_problems(root: RawSection) -> list[Problem]:
    """Each `proxy.tls.certificates` entry's files, as the listener will load them."""
    proxy = root.section("proxy")
    tls = proxy.section("tls") if proxy is not None else None
    if tls is None:
        return []
    problems: list[Problem] = []
    for entry in tls.items("certificates"):
        # A file not given is the schema's to report; the other is still checked.
        for trouble in file_problems(entry.typed("cert", str), entry.typed("key", str)):
            problems.append(Problem(entry.path(trouble.field), str(trouble)))
    return problems
