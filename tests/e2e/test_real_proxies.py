"""Traefik, Caddy, nginx and HAProxy as pxproxy's companions, each running exactly the recipe
`pxproxy integrations <kind>` prints, against a daemon and a lab:

a. a ready guest is reached through the proxy, and pxproxy's proxy served none of it (its
   request counter for the route does not move);
b. a sleeping guest is woken by a request through the proxy, which the guest answers, and then
   the route leads to the guest again, not to pxproxy;
c. a change of the guest's address is followed within pxproxy's poll and address refresh plus
   the proxy's TTL or provider interval (and slack), by direct answers;
d. idle-watch keeps the guest awake while traffic flows through the proxy (Traefik: its
   metrics; the others: the guest's netin/netout), and stops it once the traffic ends.

Plus: each program runs a static route to a lab guest (the first proof that it runs here),
accepts its recipe for every route shape, and nginx on pxproxy's address at a parked guest's
port falls back to pxproxy instead of proxying to itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pxproxy.config.loader import load_config
from pxproxy.config.models import Config
from pxproxy.integrations.recipes import recipe
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import guest_ip

from ..support import lab_cluster, wait_for
from .daemon_process import DaemonProcess, running_daemon
from .real_proxies import (
    KINDS,
    Kind,
    RealProxy,
    check_command,
    free_port,
    running_proxy,
    static_config,
)

TOKEN = "companion-read-token-0123"
# vmids 6400..6439 belong to this module: 64PS, P the proxy (0..3), S the scenario.
BASE = {"traefik": 6400, "caddy": 6410, "nginx": 6420, "haproxy": 6430}
# Intervals the convergence bound is made of (config below).
POLL_S, IP_REFRESH_S, TTL_S, PROVIDER_S = 0.2, 0.5, 1.0, 1.0
# pxproxy re-resolves an address within 1.25 x ip_refresh (its spread) after a poll; the proxy
# then needs one TTL (DNS) or one provider poll (Traefik); plus slack for a loaded machine and
# for what the proxies add (Traefik's providersThrottleDuration, HAProxy's 1 s retry turn).
CONVERGE_BOUND_S = POLL_S + 1.25 * IP_REFRESH_S + max(TTL_S, PROVIDER_S) + 2.0
IDLE_S = 2.0


async def fetch(
    url: str, host: str, path: str = "/", headers: Mapping[str, str] | None = None
) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + path, headers={"Host": host, **(headers or {})}) as resp,
    ):
        return resp.status, await resp.text()


async def fetch_size(url: str, host: str, path: str) -> tuple[int, int]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(url + path, headers={"Host": host}) as resp,
    ):
        return resp.status, len(await resp.read())


async def answers(url: str, host: str, body: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        return await fetch(url, host) == (200, body)
    return False


def body_of(name: str, vmid: int) -> str:
    return f"{name} (vmid {vmid})\n"


# ------------------------------------------------------------------- each program runs here


@pytest.mark.parametrize("kind", KINDS)
async def test_each_program_proxies_a_static_route_to_a_lab_guest(
    lab_server: LabServer, tmp_path: Path, kind: Kind
) -> None:
    vmid = BASE[kind] + 9
    lab_server.cluster.add_guest(vmid, "lxc", f"static-{kind}", status="running", static_ip=True)
    await lab_server.cluster.open()
    port = free_port()
    host = f"static-{kind}.test"
    text = static_config(kind, host, f"{guest_ip(vmid)}:8080", f"127.0.0.1:{port}", tmp_path)
    async with running_proxy(kind, text, tmp_path / kind, port) as proxy:
        await wait_for(
            lambda: answers(proxy.url, host, body_of(f"static-{kind}", vmid)),
            15,
            f"{kind} to proxy the static route",
        )


@pytest.mark.parametrize("kind", ["caddy", "nginx", "haproxy"])
async def test_the_program_accepts_its_recipe_for_every_route_shape(
    tmp_path: Path, kind: Kind
) -> None:
    """Exact hosts, wildcards, a path prefix, an https guest, refs by name, cluster:name
    and vmid, and a TCP route (which these recipes leave out)."""
    config = Config.model_validate(
        {
            "proxmox": [{"url": "https://pve.example:8006", "token_id": "a@pve!b", "secret": "s"}],
            "listen": {"proxy": "0.0.0.0:8080", "api": "127.0.0.1:8081"},
            "dns": {"listen": "127.0.0.1:5353", "zone": "pve.internal"},
            "routes": [
                {"host": "wiki.example.com", "guest": "wiki", "port": 80, "idle": {}},
                {
                    "host": ["git.example.com", "*.git.example.com"],
                    "guest": "home:git",
                    "port": 3000,
                },
                {"host": "git.example.com", "guest": 105, "port": 9000, "path_prefix": "/api"},
                {"host": "nas.example.com", "guest": "nas", "port": 5001, "scheme": "https"},
                {"listen": "0.0.0.0:25565", "guest": "mc", "port": 25565},
            ],
        }
    )
    # What `pxproxy integrations <kind>` prints (every address, port 80), and a given address.
    for i, listen in enumerate((None, f"127.0.0.1:{free_port()}")):
        text = recipe(kind, config, listen=listen)
        argv = check_command(kind, text, tmp_path / f"{kind}-{i}")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out = (await proc.communicate())[0].decode(errors="replace")
        assert proc.returncode == 0, f"{' '.join(argv)}:\n{out}\n--- recipe\n{text}"


# ------------------------------------------------------------------- companion mode


@dataclass
class Companion:
    kind: Kind
    lab: LabServer
    daemon: DaemonProcess
    proxy: RealProxy
    api: str
    recipe: str
    _direct_since: float | None = None  # steadily_direct()'s window

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{self.api}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            return await resp.text()

    async def proxied_by_pxproxy(self, host: str) -> float:
        """Requests pxproxy's own proxy served for `host` (any status)."""
        pattern = re.compile(
            r'^pxproxy_proxy_requests_total\{route="' + re.escape(host) + r'",[^}]*\} (\S+)$',
            re.M,
        )
        return sum(float(m.group(1)) for m in pattern.finditer(await self.metrics()))

    async def answered_directly(self, host: str, body: str) -> bool:
        """One request through the proxy answered with `body` while pxproxy's own proxy
        served nothing for `host` (it counts a request before the client has its answer)."""
        before = await self.proxied_by_pxproxy(host)
        if not await answers(self.proxy.url, host, body):
            return False
        return await self.proxied_by_pxproxy(host) == before

    async def steadily_direct(self, host: str, body: str) -> bool:
        """Answered directly, and so for longer than a DNS answer lives: nginx's workers keep
        a resolver cache each, so one worker may still hold the parked answer another has
        forgotten. True once a TTL and a half of answers all came straight from the guest."""
        if not await self.answered_directly(host, body):
            self._direct_since = None
            return False
        now = time.monotonic()
        if self._direct_since is None:
            self._direct_since = now
        return now - self._direct_since >= TTL_S * 1.5

    def why(self) -> str:
        return f"\n--- recipe\n{self.recipe}\n--- daemon\n{self.daemon.text}\n{self.proxy.log()}"


def _route(host: str, guest: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "guest": guest, "port": 8080, **extra}


def _idle(kind: Kind) -> dict[str, Any]:
    source: dict[str, Any] = (
        {"source": "traefik"} if kind == "traefik" else {"source": "traffic", "threshold": 512}
    )
    return {
        "idle": {"timeout": f"{IDLE_S}s", "wake_timeout": "20s", "shutdown_timeout": "2s"},
        "activity": source,
    }


@contextlib.asynccontextmanager
async def companion(
    kind: Kind,
    lab: LabServer,
    tmp_path: Path,
    routes: list[dict[str, Any]],
    *,
    proxy_host: str = "127.0.0.1",
    edge: tuple[str, int] | None = None,
) -> AsyncIterator[Companion]:
    """A daemon with `dns:` and the integrations on, its proxy on `proxy_host`, and `kind`
    running its recipe for it, listening on `edge` (default: a free loopback port)."""
    proxy_port, api_port, dns_port, metrics_port = (free_port() for _ in range(4))
    edge_host, edge_port = edge or ("127.0.0.1", free_port())
    data: dict[str, Any] = {
        "proxmox": [lab_cluster(lab, poll_interval=f"{POLL_S}s", ip_refresh=f"{IP_REFRESH_S}s")],
        "listen": {"proxy": f"{proxy_host}:{proxy_port}", "api": f"127.0.0.1:{api_port}"},
        "api": {"tokens": [{"name": "edge", "secret": TOKEN, "scopes": ["read"]}]},
        "dns": {"listen": f"127.0.0.1:{dns_port}", "zone": "pve.internal", "ttl": f"{TTL_S}s"},
        "integrations": {
            "traefik": {
                "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
                "metrics_interval": "500ms",
            }
        },
        "routes": routes,
        "state": {"enabled": False},
    }
    path = tmp_path / "pxproxy.yml"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    # The text `pxproxy integrations <kind> -c pxproxy.yml` prints, for the proxy's address.
    config = load_config(str(path))
    text = recipe(
        kind,
        config,
        config_path=str(path),
        listen=f"{edge_host}:{edge_port}",
        poll_interval=f"{PROVIDER_S:g}s",
    )
    extra = (metrics_port,) if kind == "traefik" else ()
    async with running_daemon(path) as daemon:
        await daemon.wait_listening("api", "proxy", "dns")
        async with running_proxy(
            kind, text, tmp_path / kind, edge_port, token=TOKEN, extra_ports=extra, host=edge_host
        ) as proxy:
            yield Companion(kind, lab, daemon, proxy, f"http://127.0.0.1:{api_port}", text)


async def _wait(c: Companion, predicate: Any, timeout_s: float, what: str) -> None:
    try:
        await wait_for(predicate, timeout_s, what)
    except pytest.fail.Exception as exc:
        pytest.fail(f"{c.kind}: {exc}{c.why()}")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_ready_guest_is_reached_directly_through_the_proxy(
    lab_server: LabServer, tmp_path: Path, kind: Kind
) -> None:
    vmid = BASE[kind] + 1
    name = f"ready-{kind}"
    lab_server.cluster.add_guest(vmid, "lxc", name, status="running", static_ip=True)
    await lab_server.cluster.open()
    host = f"{name}.test"
    async with companion(kind, lab_server, tmp_path, [_route(host, name)]) as c:
        expected = body_of(name, vmid)
        await _wait(c, lambda: c.answered_directly(host, expected), 20, "a direct answer")
        before = await c.proxied_by_pxproxy(host)
        for _ in range(20):
            assert await fetch(c.proxy.url, host) == (200, expected), c.why()
        # Not one of the 20 went through pxproxy's proxy.
        assert await c.proxied_by_pxproxy(host) == before, c.why()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_sleeping_guest_is_woken_by_a_request_through_the_proxy(
    lab_server: LabServer, tmp_path: Path, kind: Kind
) -> None:
    vmid = BASE[kind] + 2
    name = f"sleepy-{kind}"
    lab_server.cluster.add_guest(vmid, "lxc", name, static_ip=True, boot_time_s=0.5)
    canary_vmid = BASE[kind] + 5
    canary = f"canary-{kind}"
    lab_server.cluster.add_guest(canary_vmid, "lxc", canary, status="running", static_ip=True)
    await lab_server.cluster.open()
    host = f"{name}.test"
    routes = [_route(host, name, **_idle(kind)), _route(f"{canary}.test", canary)]
    async with companion(kind, lab_server, tmp_path, routes) as c:
        # The proxy has loaded its routes (Traefik: a provider poll) once an awake guest's
        # route answers; the sleeping one was not touched by that.
        await _wait(
            c,
            lambda: answers(c.proxy.url, f"{canary}.test", body_of(canary, canary_vmid)),
            20,
            "the proxy's routes",
        )
        assert lab_server.cluster.guests[vmid].status == "stopped"
        # Parked: the proxy's route leads to pxproxy. A non-browser client is held until the
        # guest is ready, and the guest answers it.
        started = time.monotonic()
        status, body = await fetch(c.proxy.url, host, headers={"Accept": "*/*"})
        assert (status, body) == (200, body_of(name, vmid)), c.why()
        assert lab_server.cluster.guests[vmid].status == "running"
        assert time.monotonic() - started >= 0.5  # it did wait for the boot
        assert await c.proxied_by_pxproxy(host) >= 1, c.why()
        starts = [t for t in lab_server.tasks if t.id == str(vmid) and t.type == "vzstart"]
        assert len(starts) == 1
        # Awake again, the route leads back to the guest itself.
        await _wait(
            c,
            lambda: c.answered_directly(host, body_of(name, vmid)),
            CONVERGE_BOUND_S,
            "the route back to the guest",
        )


async def test_nginx_on_the_parked_address_and_port_falls_back_instead_of_looping(
    lab_server: LabServer, tmp_path: Path
) -> None:
    """nginx on pxproxy's host, listening on a sleeping guest's port: the parked A record
    leads nginx to itself, which closes the request it sees come back (its hop header), so
    the first hop falls back to pxproxy, which wakes the guest."""
    vmid = BASE["nginx"] + 6
    name = "looping-nginx"
    lab_server.cluster.add_guest(vmid, "lxc", name, static_ip=True, boot_time_s=0.2)
    host = f"{name}.test"
    # 127.0.0.3: an address of this host that no other test listens on at the guest's port.
    routes = [_route(host, name, **_idle("nginx"))]
    async with companion(
        "nginx", lab_server, tmp_path, routes, proxy_host="127.0.0.3", edge=("127.0.0.3", 8080)
    ) as c:
        status, body = await fetch(c.proxy.url, host, headers={"Accept": "*/*"})
        assert (status, body) == (200, body_of(name, vmid)), c.why()
        # One hop came back to nginx and was closed; no more.
        assert c.proxy.log().count("upstream prematurely closed connection") == 1, c.why()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_new_guest_address_is_followed(
    lab_server: LabServer, tmp_path: Path, kind: Kind
) -> None:
    vmid = BASE[kind] + 3
    name = f"moving-{kind}"
    lab_server.cluster.add_guest(vmid, "lxc", name, status="running", static_ip=True)
    await lab_server.cluster.open()
    host = f"{name}.test"
    async with companion(kind, lab_server, tmp_path, [_route(host, name)]) as c:
        expected = body_of(name, vmid)
        await _wait(c, lambda: c.answered_directly(host, expected), 20, "a direct answer")
        # Far from every other guest's address; the old one stops listening at once, so a
        # direct answer from now on came from the new one (nginx's fallback to pxproxy may
        # answer meanwhile: that is not a direct answer).
        moved = guest_ip(vmid + 3 * 65536)
        changed = time.monotonic()
        await lab_server.cluster.readdress(vmid, moved)
        await _wait(
            c,
            lambda: c.answered_directly(host, expected),
            CONVERGE_BOUND_S,
            "a direct answer from the new address",
        )
        took = time.monotonic() - changed
        assert took <= CONVERGE_BOUND_S, c.why()


@pytest.mark.parametrize("kind", KINDS)
async def test_traffic_through_the_proxy_keeps_the_guest_awake_until_it_ends(
    lab_server: LabServer, tmp_path: Path, kind: Kind
) -> None:
    vmid = BASE[kind] + 4
    name = f"busy-{kind}"
    lab_server.cluster.add_guest(
        vmid, "lxc", name, status="running", static_ip=True, shutdown_time_s=0.05
    )
    await lab_server.cluster.open()
    host = f"{name}.test"
    guest = lab_server.cluster.guests[vmid]
    async with companion(kind, lab_server, tmp_path, [_route(host, name, **_idle(kind))]) as c:
        expected = body_of(name, vmid)
        await _wait(c, lambda: c.steadily_direct(host, expected), 20, "steady direct answers")
        before = await c.proxied_by_pxproxy(host)
        # Traffic for three idle timeouts: each request's bytes reach the guest directly.
        until = time.monotonic() + 3 * IDLE_S
        served = 0
        while time.monotonic() < until:
            assert await fetch_size(c.proxy.url, host, "/big?bytes=4096") == (200, 4096)
            served += 1
            assert guest.status == "running", f"stopped after {served} requests{c.why()}"
            await asyncio.sleep(0.1)
        assert [t.type for t in lab_server.tasks if t.id == str(vmid)] == [], c.why()
        assert await c.proxied_by_pxproxy(host) == before, c.why()
        # Silence: idle-watch stops it after the timeout.
        ended = time.monotonic()
        await _wait(c, lambda: guest.status == "stopped", 4 * IDLE_S + 5, "the idle stop")
        assert time.monotonic() - ended >= IDLE_S * 0.5, c.why()
