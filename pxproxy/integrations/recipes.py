"""Recipes: the configuration of Traefik, Caddy, nginx or HAProxy that makes it a companion of
pxproxy, filled in from pxproxy's config. `pxproxy integrations <kind>` prints them and the
end-to-end tests run exactly this text against the real programs.

- Traefik: the static side only (entrypoints, the HTTP provider polling pxproxy's API with a
  bearer token, Prometheus metrics with service labels for `activity: {source: traefik}`); the
  routers and services come from `GET /integrations/traefik`.
- Caddy, HAProxy: one upstream per route, found through pxproxy's DNS responder by SRV
  (`_<port>._tcp.<guest>.<zone>`), which names the guest's address and port while it is awake
  and pxproxy's proxy listener while it is parked.
- nginx (OSS cannot resolve SRV): the A record of `<guest>.<zone>` through `resolver ...
  valid=` and a variable `proxy_pass`; a parked A record is pxproxy's address with the guest's
  port, which refuses at once, and `error_page 502 504 = @pxproxy` hands the request to
  pxproxy's proxy listener, which wakes the guest.

No real secret is ever printed: the Traefik token is the `${PXPROXY_TOKEN}` placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit

from ..config.companion import DnsConfig
from ..config.models import Config, RouteConfig, is_loopback_host, split_address
from ..routing.endpoints import ProxyEndpoints, endpoints_for, reachable
from ..routing.route_set import route_name
from .addresses import url_host
from .names import route_slug

RecipeKind = Literal["traefik", "caddy", "nginx", "haproxy"]
KINDS: tuple[RecipeKind, ...] = get_args(RecipeKind)
TOKEN_PLACEHOLDER = "${PXPROXY_TOKEN}"
DEFAULT_LISTEN = ":80"
# Traefik's metrics entrypoint when `integrations.traefik.metrics_url` names none (8080, Traefik's
# own default, is pxproxy's proxy port).
DEFAULT_METRICS_ADDRESS = "127.0.0.1:8082"


class RecipeError(ValueError):
    """The config lacks what a recipe needs (e.g. `dns:` for Caddy, nginx, HAProxy)."""


@dataclass(frozen=True, slots=True)
class _Upstream:
    """One HTTP route as a DNS-found upstream."""

    route: RouteConfig
    slug: str
    a_name: str  # <guest>.<zone>
    srv_name: str  # _<port>._tcp.<guest>.<zone>


def recipe(
    kind: RecipeKind,
    config: Config,
    *,
    config_path: str | None = None,
    listen: str | None = None,
    endpoints: ProxyEndpoints | None = None,
    poll_interval: str = "2s",
) -> str:
    """The recipe for `kind`. `listen`: where the proxy itself listens (default `:80`);
    `endpoints`: pxproxy's live proxy endpoints (default: from the config);
    `poll_interval`: Traefik's provider poll interval."""
    proxy = endpoints if endpoints is not None else default_endpoints(config)
    where = listen or DEFAULT_LISTEN
    origin = f"pxproxy integrations {kind}" + (f" -c {config_path}" if config_path else "")
    if kind == "traefik":
        return _traefik(config, origin, where, poll_interval)
    dns = config.dns
    if dns is None:
        raise RecipeError(
            f"the {kind} recipe finds guests through pxproxy's DNS responder: add "
            "`dns: {listen: 127.0.0.1:5353, zone: pve.internal, ttl: 2s}` to the config"
        )
    if proxy.http is None:
        raise RecipeError("pxproxy's proxy listener has no address for other proxies to use")
    upstreams = [_upstream(r, dns) for r in config.routes if r.host]
    if kind == "nginx":
        return _nginx(upstreams, dns, proxy.http, origin, where, tls=proxy.tls)
    if proxy.tls:
        _refuse_plain_upstreams(kind, upstreams)
    render = {"caddy": _caddy, "haproxy": _haproxy}[kind]
    return render(upstreams, dns, proxy.http, origin, where)


def _refuse_plain_upstreams(kind: RecipeKind, upstreams: Sequence[_Upstream]) -> None:
    """Caddy and HAProxy reach a guest and, while it sleeps, pxproxy through one upstream
    with one scheme: a plain-HTTP guest and pxproxy's TLS listener cannot share it."""
    plain = [route_name(up.route) for up in upstreams if up.route.scheme == "http"]
    if plain:
        raise RecipeError(
            f"with proxy.tls, pxproxy's proxy listener speaks HTTPS, but the {kind} recipe "
            "reaches a guest and, while it sleeps, pxproxy through one upstream that speaks "
            f"one scheme, and these routes' guests speak plain HTTP: {', '.join(plain)}. Let "
            f"{kind} terminate TLS and remove proxy.tls, or use the traefik or nginx recipe"
        )


def default_endpoints(config: Config) -> ProxyEndpoints:
    """The proxy endpoints as the config alone gives them (the daemon knows bound ports)."""
    return endpoints_for(
        config.integrations.proxy_address,
        split_address(config.listen.proxy),
        {},
        tls=config.proxy.tls is not None,
    )


def guest_label(route: RouteConfig) -> str:
    """The DNS label of the route's guest: the ref's last part (`home:wiki` -> `wiki`,
    `pve1/101` -> `101`), lowercased."""
    ref = route.guest.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return ref.lower()


def dns_name(route: RouteConfig, dns: DnsConfig) -> str:
    """The name pxproxy's DNS answers for the route's guest: a route host inside the zone,
    else `<guest>.<zone>` (guest names and vmids are both names there)."""
    suffix = "." + dns.zone
    if dns.route_hosts:
        for host in route.host or ():
            if host.lower().endswith(suffix) and not host.startswith("*."):
                return host.lower()
    return f"{guest_label(route)}.{dns.zone}"


def _upstream(route: RouteConfig, dns: DnsConfig) -> _Upstream:
    a_name = dns_name(route, dns)
    return _Upstream(route, route_slug(route), a_name, f"_{route.port}._tcp.{a_name}")


def _host_port(address: str) -> tuple[str, int]:
    host, port = split_address(address)
    return reachable(host), port


def _join(host: str, port: int) -> str:
    return f"{url_host(host)}:{port}"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _header(origin: str, what: str) -> list[str]:
    return [
        f"# {what}",
        f"# Generated by `{origin}` from pxproxy's config; run it again after changing routes.",
    ]


_DECLARED_NOTE = (
    "Routes that guests declare in their Proxmox notes are not listed here: add an entry for "
    "each (the same shape as these) or a wildcard host."
)


# --------------------------------------------------------------------------------- Traefik


def _traefik(config: Config, origin: str, listen: str, poll_interval: str) -> str:
    opts = config.integrations.traefik
    api_host, api_port = _host_port(config.listen.api)
    endpoint = f"http://{_join(api_host, api_port)}/integrations/traefik"
    metrics_address, metrics_path = DEFAULT_METRICS_ADDRESS, "/metrics"
    if opts.metrics_url:
        parts = urlsplit(opts.metrics_url)
        if parts.hostname and parts.port:
            metrics_address = _join(parts.hostname, parts.port)
            metrics_path = parts.path or "/metrics"
    lines = _header(origin, "Traefik static configuration for pxproxy's companion mode.")
    lines += [
        "# Routers and services come from pxproxy's HTTP provider: each route points at its",
        "# guest while it is awake and at pxproxy's proxy listener while it sleeps (pxproxy",
        "# wakes it). Guest-declared routes appear there by themselves.",
    ]
    public = config.integrations.public and is_loopback_host(api_host)
    if not public:
        names = [t.name for t in config.api.tokens if "read" in t.scopes]
        which = f" (e.g. the token `{names[0]}`)" if names else ""
        lines += [
            f"# Put the secret of a token with the read scope{which} in place of",
            f"# {TOKEN_PLACEHOLDER}, e.g. PXPROXY_TOKEN=... envsubst '{TOKEN_PLACEHOLDER}' "
            "< this-file > traefik.yml",
        ]
    lines += ["entryPoints:"]
    entrypoints = list(opts.entrypoints) or ["web"]
    for i, name in enumerate(entrypoints):
        address = listen if i == 0 else (":443" if name == "websecure" else ":80")
        lines += [f"  {name}:", f'    address: "{address}"']
    for route in config.routes:
        if route.listen and route.protocol == "udp":
            port = split_address(route.listen)[1]
            name = opts.udp_entrypoints.get(port, f"udp-{port}")
            lines += [
                f"  {name}:  # UDP route {route_name(route)}; pick a port pxproxy does not use",
                f'    address: ":{port}/udp"',
            ]
        elif route.listen:
            port = split_address(route.listen)[1]
            name = opts.tcp_entrypoints.get(port, f"tcp-{port}")
            lines += [
                f"  {name}:  # TCP route {route_name(route)}; pick a port pxproxy does not use",
                f'    address: ":{port}"',
            ]
    # Metrics only when idle-watch reads them: every labelled series costs Traefik CPU on
    # each request (measured: 7-13 % per request on a ready guest).
    metrics = bool(opts.metrics_url) or any(r.activity.source == "traefik" for r in config.routes)
    if metrics:
        lines += [
            "  metrics:  # Traefik's Prometheus metrics, read by idle-watch",
            f'    address: "{metrics_address}"',
        ]
    lines += [
        "providers:",
        "  http:",
        f'    endpoint: "{endpoint}"',
        f'    pollInterval: "{poll_interval}"',
    ]
    if not public:
        lines += ["    headers:", f'      Authorization: "Bearer {TOKEN_PLACEHOLDER}"']
    if not metrics:
        lines += [
            "# No metrics: nothing reads them. For idle-watch on Traefik's own traffic, give",
            "# routes `activity: {source: traefik}` and tell pxproxy where to read them:",
            "#   integrations: {traefik: {metrics_url: "
            f"http://{metrics_address}{metrics_path}}}}}",
            "# then print this recipe again: it turns Traefik's metrics on there.",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "metrics:",
        "  prometheus:",
        "    entryPoint: metrics",
        "    # Per-service requests: `activity: {source: traefik}`. Nothing else is read, and",
        "    # every labelled series costs CPU on each request.",
        "    addServicesLabels: true",
        "    addRoutersLabels: false",
        "    addEntryPointsLabels: false",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------- Caddy


def _by_host(upstreams: Sequence[_Upstream]) -> dict[tuple[str, ...], list[_Upstream]]:
    """Sites: hosts that the same routes serve, grouped (one host in one site only, as Caddy
    and nginx need), each site's routes longest path prefix first (the most specific wins)."""
    per_host: dict[str, list[_Upstream]] = {}
    for up in upstreams:
        for host in up.route.host or ():
            per_host.setdefault(host.lower(), []).append(up)
    groups: dict[tuple[str, ...], list[_Upstream]] = {}
    by_routes: dict[tuple[int, ...], list[str]] = {}
    for host, ups in per_host.items():
        by_routes.setdefault(tuple(id(u) for u in ups), []).append(host)
    for hosts in by_routes.values():
        group = sorted(per_host[hosts[0]], key=lambda u: -len(u.route.path_prefix or ""))
        groups[tuple(hosts)] = group
    return groups


def _most_specific_first(upstreams: Sequence[_Upstream]) -> list[_Upstream]:
    return sorted(upstreams, key=lambda u: -len(u.route.path_prefix or ""))


def _caddy(
    upstreams: Sequence[_Upstream],
    dns: DnsConfig,
    proxy: tuple[str, int],
    origin: str,
    listen: str,
) -> str:
    resolver = dns.listen
    refresh = _seconds(max(dns.ttl, 1.0))
    bind, _, port = listen.rpartition(":")
    lines = _header(origin, "Caddyfile for pxproxy's companion mode.")
    lines += [
        "# Each upstream is looked up by SRV in pxproxy's DNS zone: the guest's address and",
        "# port while it is awake, pxproxy's proxy listener"
        f" ({_join(*proxy)}) while it sleeps, so the",
        "# request wakes it. Caddy passes the Host header through unchanged.",
        f"# {_DECLARED_NOTE}",
        "# Sites are plain http://; drop the prefix to let Caddy get certificates.",
        "{",
        f"\thttp_port {port or 80}",
    ]
    if bind:
        lines.append(f"\tdefault_bind {bind}")
    lines += ["}", ""]
    for hosts, group in _by_host(upstreams).items():
        lines.append(", ".join(f"http://{h}" for h in hosts) + " {")
        for up in group:
            prefix = up.route.path_prefix
            # Several routes on one site: mutually exclusive handle blocks.
            wrapped = bool(prefix) or len(group) > 1
            indent = "\t\t" if wrapped else "\t"
            if prefix:
                lines.append(f"\thandle {prefix.rstrip('/')}* {{")
            elif wrapped:
                lines.append("\thandle {")
            lines += [
                f"{indent}reverse_proxy {{",
                f"{indent}\t# route {route_name(up.route)} -> guest {up.route.guest}",
                f"{indent}\tdynamic srv {up.srv_name} {{",
                f"{indent}\t\tresolvers {resolver}",
                f"{indent}\t\trefresh {refresh}",
                f"{indent}\t}}",
                f"{indent}\ttransport http {{",
                f"{indent}\t\t# The SRV target ({up.a_name}) is resolved here too.",
                f"{indent}\t\tresolvers {resolver}",
                f"{indent}\t\tdial_timeout 3s",
            ]
            if up.route.scheme == "https":
                lines += [f"{indent}\t\ttls", f"{indent}\t\ttls_insecure_skip_verify"]
            lines += [f"{indent}\t}}", f"{indent}}}"]
            if wrapped:
                lines.append("\t}")
        lines += ["}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# --------------------------------------------------------------------------------- nginx


def _nginx(
    upstreams: Sequence[_Upstream],
    dns: DnsConfig,
    proxy: tuple[str, int],
    origin: str,
    listen: str,
    *,
    tls: bool = False,
) -> str:
    valid = _seconds(max(dns.ttl, 1.0))
    pxproxy = _join(*proxy)
    # proxy.tls: nginx does not verify what it proxies to unless told (proxy_ssl_verify).
    pxproxy_scheme = "https" if tls else "http"
    lines = _header(origin, "nginx recipe for pxproxy's companion mode (http{} context).")
    lines += [
        "# Put it in /etc/nginx/conf.d/pxproxy.conf. nginx OSS cannot resolve SRV, so each",
        "# upstream is the A record of <guest>.<zone>, resolved at request time (a variable",
        "# proxy_pass) and cached for `valid`. While a guest sleeps, its A record is pxproxy's",
        f"# address ({proxy[0]}), where the guest's port refuses at once: nginx's own 502 then",
        f"# hands the request to pxproxy's proxy listener ({pxproxy}), which wakes the guest.",
        "# Trade-off: that port must have nothing else listening on pxproxy's address (this",
        "# nginx itself is caught: a request that comes back is closed, so the first hop",
        "# falls back), and a guest that refuses connections while awake is also sent to",
        "# pxproxy (which answers 502 itself).",
        f"# {_DECLARED_NOTE}",
        f"resolver {dns.listen} valid={valid} ipv6=off;",
        "resolver_timeout 2s;",
        "map $http_upgrade $pxproxy_connection { default upgrade; '' ''; }",
        "",
    ]
    for hosts, group in _by_host(upstreams).items():
        lines += [
            "server {",
            f"    listen {_nginx_listen(listen)};",
            f"    server_name {' '.join(hosts)};",
            "    # Back here through a parked guest's address: close, the first hop falls back.",
            f"    if ($http_{_HOP_HEADER.lower().replace('-', '_')}) {{ return 444; }}",
        ]
        for up in group:
            prefix = up.route.path_prefix or "/"
            scheme = up.route.scheme
            var = "$pxproxy_" + up.slug.replace("-", "_")
            lines += [
                f"    location {prefix} {{",
                f"        # route {route_name(up.route)} -> guest {up.route.guest}",
                f"        set {var} {up.a_name};",
                f"        proxy_pass {scheme}://{var}:{up.route.port};",
                *_nginx_headers("        "),
                f"        proxy_set_header {_HOP_HEADER} 1;",
                "        proxy_connect_timeout 3s;",
                "        error_page 502 504 = @pxproxy;",
                "    }",
            ]
        lines += [
            "    location @pxproxy {",
            "        # pxproxy's proxy listener: wakes the guest, loading page or held request",
            f"        proxy_pass {pxproxy_scheme}://{pxproxy};",
            *_nginx_headers("        "),
            "        proxy_read_timeout 300s;",
            "    }",
            "}",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _nginx_listen(listen: str) -> str:
    """nginx spells "every address" as a bare port (`listen 80`), not `:80`."""
    return listen[1:] if listen.startswith(":") else listen


# Marks a request this nginx sends towards a guest, so that one which comes back to it (the
# parked address is pxproxy's host and nginx listens there on the guest's port) is refused.
_HOP_HEADER = "X-Pxproxy-Hop"


def _nginx_headers(indent: str) -> list[str]:
    return [
        f"{indent}proxy_http_version 1.1;",
        f"{indent}proxy_set_header Host $host;",
        f"{indent}proxy_set_header Upgrade $http_upgrade;",
        f"{indent}proxy_set_header Connection $pxproxy_connection;",
        f"{indent}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        f"{indent}proxy_set_header X-Forwarded-Proto $scheme;",
    ]


# --------------------------------------------------------------------------------- HAProxy


def _haproxy(
    upstreams: Sequence[_Upstream],
    dns: DnsConfig,
    proxy: tuple[str, int],
    origin: str,
    listen: str,
) -> str:
    valid = _seconds(max(dns.ttl, 1.0))
    lines = _header(origin, "HAProxy recipe for pxproxy's companion mode.")
    lines += [
        "# Append it to haproxy.cfg (after global). Each backend is one server found by SRV in",
        "# pxproxy's DNS zone: the guest's address and port while it is awake, pxproxy's proxy",
        f"# listener ({_join(*proxy)}) while it sleeps, so the request wakes it. HAProxy",
        "# passes the Host header through unchanged.",
        f"# {_DECLARED_NOTE}",
        "resolvers pxproxy",
        f"    nameserver pxproxy {dns.listen}",
        "    accepted_payload_size 1232",
        "    resolve_retries 3",
        "    timeout resolve 1s",
        "    timeout retry 1s",
        f"    hold valid {valid}",
        "    hold obsolete 1s",
        "    hold other 1s",
        "    hold refused 1s",
        "    hold nx 1s",
        "    hold timeout 1s",
        "",
        "defaults pxproxy",
        "    mode http",
        "    timeout connect 3s",
        "    timeout client 300s",
        "    timeout server 300s",
        "    timeout tunnel 1h",
        "    # A connection that fails (the guest moved, or just went to sleep) is retried on",
        "    # the server's current address, which DNS may have changed meanwhile.",
        "    option redispatch 1",
        "",
        "frontend pxproxy-http",
        f"    bind {listen}",
        "    option forwardfor",
        "    http-request set-var(txn.pxproxy_host) req.hdr(host),field(1,:),lower",
    ]
    # use_backend rules are tried in order: a path prefix before the same host without one.
    order = _most_specific_first(upstreams)
    for up in order:
        exact = [h.lower() for h in up.route.host or () if not h.startswith("*.")]
        wild = [h[1:].lower() for h in up.route.host or () if h.startswith("*.")]
        acls = []
        if exact:
            acls.append(f"    acl host-{up.slug} var(txn.pxproxy_host) -m str {' '.join(exact)}")
        if wild:
            acls.append(f"    acl host-{up.slug} var(txn.pxproxy_host) -m end {' '.join(wild)}")
        lines += acls
        cond = f"host-{up.slug}"
        if up.route.path_prefix:
            lines.append(f"    acl path-{up.slug} path_beg {up.route.path_prefix}")
            cond += f" path-{up.slug}"
        lines.append(f"    use_backend pxproxy-{up.slug} if {cond}")
    lines.append("")
    for up in order:
        ssl = " ssl verify none" if up.route.scheme == "https" else ""
        lines += [
            f"backend pxproxy-{up.slug}",
            f"    # route {route_name(up.route)} -> guest {up.route.guest}",
            f"    server-template guest 1 {up.srv_name} resolvers pxproxy init-addr none{ssl}",
            "",
        ]
    return "\n".join(lines).rstrip("\n") + "\n"
