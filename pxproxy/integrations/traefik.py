"""Traefik's dynamic configuration for its HTTP provider: one router per route, each service
pointed at the guest while its route is ready and at pxproxy's proxy listener while it is
parked (asleep, waking, stopping, failed) or its guest has no address, so that a request
reaches the wake and the loading page. Transport-free: a function of its inputs.

Routers mirror pxproxy's own host table (routing/hosts.py): exact names win over wildcards, and
among wildcards the longest suffix wins. Traefik orders routers by priority, so exact hosts and
each wildcard get their own router with a priority that says so: a route whose hosts are all
exact, or one wildcard, is one router; a route mixing them is one router per kind. TCP and UDP
routes get a `tcp` or `udp` router on an entrypoint of their own (by their listen port).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config.companion import TraefikOptions
from ..config.models import RouteConfig, split_address
from ..inventory.snapshot import Snapshot
from ..routing.endpoints import ProxyEndpoints
from ..routing.route_set import Route, RouteSet, upstream_prefix
from ..wake.contract import Gate, WakeState
from .addresses import first_address, url_host
from .names import traefik_router_name, traefik_service_name

# Above any default priority (Traefik's default is the rule's length), exact hosts first.
EXACT_PRIORITY = 10_000
# Wildcards below exact hosts, the longer suffix first (a host name has at most 253 chars).
WILDCARD_PRIORITY = 5_000
# Routes from guests' notes rank below every other router (Traefik's default priority is the
# rule's length, at least 8): whoever may edit a guest's notes must not take over a host that
# one of your own routers serves. Exact hosts still beat wildcards among them.
NOTES_EXACT_PRIORITY = 2
NOTES_WILDCARD_PRIORITY = 1
# Guests' HTTPS is self-signed as a rule; pxproxy's own proxy does not verify it either.
INSECURE_TRANSPORT = "pxproxy-guest-tls"
# pxproxy's listener with `proxy.tls`: Traefik asks for it by address (no SNI, so the default
# certificate, whose names are not that address), on what is normally a loopback hop.
LISTENER_TRANSPORT = "pxproxy-listener-tls"

_SKIP_VERIFY = {"insecureSkipVerify": True}

GateFor = Callable[[RouteConfig], Gate]


@dataclass(frozen=True, slots=True)
class TraefikRender:
    config: dict[str, Any]
    # Routes left out, with why (pxproxy has no listener a parked route could be sent to).
    omitted: tuple[str, ...] = ()
    # Routes pointed at pxproxy rather than at their guest, by router/service name.
    parked: tuple[str, ...] = ()


def traefik_dynamic(
    routes: RouteSet,
    snapshot: Snapshot,
    gate_for: GateFor,
    options: TraefikOptions,
    endpoints: ProxyEndpoints,
) -> dict[str, Any]:
    return render_traefik(routes, snapshot, gate_for, options, endpoints).config


def dumps(config: dict[str, Any]) -> str:
    """The one serialisation: identical inputs give byte-identical text."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def render_traefik(
    routes: RouteSet,
    snapshot: Snapshot,
    gate_for: GateFor,
    options: TraefikOptions,
    endpoints: ProxyEndpoints,
) -> TraefikRender:
    http: dict[str, dict[str, Any]] = {"routers": {}, "services": {}, "middlewares": {}}
    tcp: dict[str, dict[str, Any]] = {"routers": {}, "services": {}}
    udp: dict[str, dict[str, Any]] = {"routers": {}, "services": {}}
    omitted: list[str] = []
    parked: list[str] = []
    for route in routes.http():
        target = _guest_address(route, snapshot, gate_for)
        if not _add_http(http, route, target, options, endpoints):
            omitted.append(f"{route.name}: parked, and pxproxy has no proxy listener to send it to")
        elif target is None:
            parked.append(traefik_service_name(route.config))
    streams = (
        ("tcp", tcp, routes.tcp(), options.tcp_entrypoints, endpoints.tcp),
        ("udp", udp, routes.udp(), options.udp_entrypoints, endpoints.udp),
    )
    for protocol, section, stream_routes, entrypoints, bound in streams:
        for route in stream_routes:
            target = _guest_address(route, snapshot, gate_for)
            if not _add_stream(section, route, target, entrypoints, bound, protocol):
                omitted.append(f"{route.name}: parked, and pxproxy is not listening on it")
            elif target is None:
                parked.append(traefik_service_name(route.config))
    config: dict[str, Any] = {}
    for key, part in (("http", http), ("tcp", tcp), ("udp", udp)):
        kept = {k: v for k, v in part.items() if v}
        if kept:
            config[key] = kept
    return TraefikRender(config, tuple(omitted), tuple(sorted(parked)))


def _guest_address(route: Route, snapshot: Snapshot, gate_for: GateFor) -> str | None:
    """The guest's address as a URL host (IPv6 bracketed) while its route is ready; None
    while it is parked, its ref does not name exactly one guest, or it has no address."""
    if gate_for(route.config).state is not WakeState.READY:
        return None
    guests = snapshot.lookup_ref(route.config.guest).guests
    if len(guests) != 1:
        return None
    ip = first_address(guests[0])
    return url_host(ip) if ip is not None else None


def _add_http(
    http: dict[str, dict[str, Any]],
    route: Route,
    target: str | None,
    options: TraefikOptions,
    endpoints: ProxyEndpoints,
) -> bool:
    config = route.config
    service = traefik_service_name(config)
    balancer: dict[str, Any] = {"passHostHeader": True}
    middlewares = list(options.middlewares)
    if target is not None:
        balancer["servers"] = [{"url": f"{config.scheme}://{target}:{config.port}"}]
        if config.scheme == "https":
            balancer["serversTransport"] = INSECURE_TRANSPORT
            http.setdefault("serversTransports", {})[INSECURE_TRANSPORT] = dict(_SKIP_VERIFY)
        prefix = upstream_prefix(config.path_prefix)
        if prefix:
            # pxproxy's proxy prepends the prefix itself: only the direct path needs it.
            name = f"{service}-prefix"
            http["middlewares"][name] = {"addPrefix": {"prefix": prefix}}
            middlewares.append(name)
    else:
        url = endpoints.http_url()
        if url is None:
            return False
        balancer["servers"] = [{"url": url}]
        if endpoints.tls:
            balancer["serversTransport"] = LISTENER_TRANSPORT
            http.setdefault("serversTransports", {})[LISTENER_TRANSPORT] = dict(_SKIP_VERIFY)
    http["services"][service] = {"loadBalancer": balancer}
    base = traefik_router_name(config)
    for index, (rule, priority) in enumerate(_rules(config.host or ())):
        if route.origin == "notes":
            priority = (
                NOTES_EXACT_PRIORITY if priority == EXACT_PRIORITY else NOTES_WILDCARD_PRIORITY
            )
        router: dict[str, Any] = {
            "rule": rule,
            "priority": priority,
            "entryPoints": list(options.entrypoints),
            "service": service,
        }
        if middlewares:
            router["middlewares"] = middlewares
        if options.tls is not None:
            router["tls"] = _tls(options)
        http["routers"][base if index == 0 else f"{base}-{index}"] = router
    return True


def _rules(hosts: tuple[str, ...]) -> list[tuple[str, int]]:
    """(rule, priority) per router: the exact hosts together, then each wildcard alone."""
    names = [h.rstrip(".").lower() for h in hosts]
    exact = [h for h in names if not h.startswith("*.")]
    out: list[tuple[str, int]] = []
    if exact:
        out.append((" || ".join(f"Host(`{h}`)" for h in exact), EXACT_PRIORITY))
    for host in names:
        if host.startswith("*."):
            suffix = host[2:]
            # Any depth, as pxproxy matches: `*.example.com` takes a.b.example.com too.
            regexp = f"^.+\\.{re.escape(suffix)}$"
            out.append((f"HostRegexp(`{regexp}`)", WILDCARD_PRIORITY + len(suffix)))
    return out


def _tls(options: TraefikOptions) -> dict[str, Any]:
    tls = options.tls
    out: dict[str, Any] = {}
    if tls is None:
        return out
    if tls.cert_resolver:
        out["certResolver"] = tls.cert_resolver
    if tls.domains:
        # One certificate for all of them: the first is its main name, the rest its SANs.
        main, *sans = tls.domains
        domain: dict[str, Any] = {"main": main}
        if sans:
            domain["sans"] = sans
        out["domains"] = [domain]
    return out


def _add_stream(
    section: dict[str, dict[str, Any]],
    route: Route,
    target: str | None,
    entrypoints: Mapping[int, str],
    bound_addresses: Mapping[str, tuple[str, int]],
    protocol: str,
) -> bool:
    """A TCP or UDP router and its service: to the guest (`target`), or, while it is parked,
    to pxproxy's listener for the route. False when that listener is not bound."""
    config = route.config
    listen = config.listen or ""
    if target is not None:
        address = f"{target}:{config.port}"
    else:
        bound = bound_addresses.get(listen)
        if bound is None:
            return False
        host, port = bound
        address = f"{url_host(host)}:{port}"
    _, listen_port = split_address(listen)
    entrypoint = entrypoints.get(listen_port, f"{protocol}-{listen_port}")
    service = traefik_service_name(config)
    section["services"][service] = {"loadBalancer": {"servers": [{"address": address}]}}
    router: dict[str, Any] = {"entryPoints": [entrypoint], "service": service}
    if protocol == "tcp":
        # A UDP router has no rule: its entrypoint (one per route) is all it matches on.
        router = {"rule": "HostSNI(`*`)", **router}
    section["routers"][traefik_router_name(config)] = router
    return True
