"""`pxproxy demo`: the lab and the daemon together, with a generated config."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import tempfile
from typing import Any, TextIO

from .config.loader import ConfigError
from .config.models import Config, split_address
from .daemon import Daemon
from .lab.server import LabServer
from .lab.state import LabCluster

DEMO_DOMAIN = "demo.localhost"
FIRST_POLL_TIMEOUT_S = 30.0
# Starts each of the daemon's log lines in the demo's terminal, among the instructions.
DEMO_LOG_PREFIX = "[pxproxy] "


def demo_config(
    lab: LabServer, proxy: str, api: str, token: str, state_path: str | None = None
) -> Config:
    """Routes for every guest under *.demo.localhost; idle-watch on the stopped ones.
    `state_path`: the run's own state file (the lab is new each run: so is its state)."""
    routes: list[dict[str, Any]] = []
    for g in sorted(lab.cluster.guests.values(), key=lambda g: g.vmid):
        route: dict[str, Any] = {
            "host": f"{g.name}.{DEMO_DOMAIN}",
            "guest": g.name,
            "port": g.ports[0],
        }
        if g.status != "running":
            route["idle"] = {"timeout": "1m", "wake_timeout": "1m", "stop_method": "shutdown"}
        routes.append(route)
    data = {
        "proxmox": [
            {
                "name": "lab",
                "url": lab.url,
                "token_id": lab.credentials.token_id,
                "secret": lab.credentials.token_secret,
                "username": "root@pam",
                "password": lab.credentials.root_password,
                "tls": {"fingerprint": lab.fingerprint},
                "poll_interval": "2s",
                "ips": {"loopback": True},  # the lab's guests live on 127.x addresses
            }
        ],
        "listen": {"proxy": proxy, "api": api},
        "api": {"tokens": [{"name": "demo", "secret": token, "scopes": ["read", "power", "exec"]}]},
        "routes": routes,
        "state": {"path": state_path} if state_path else {"enabled": False},
    }
    try:
        return Config.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"demo: {exc}") from None


def instructions(lab: LabServer, daemon: Daemon, config: Config, token: str) -> str:
    host, _ = split_address(config.listen.api)
    api = f"http://{host}:{daemon.api_port}"
    auth = f'-H "Authorization: Bearer {token}"'
    guests = sorted(lab.cluster.guests.values(), key=lambda g: g.vmid)
    running = next((g for g in guests if g.status == "running"), None)
    sleeping = next((g for g in guests if g.status != "running"), None)
    lines = [
        "pxproxy demo is running.",
        f"  lab (simulated Proxmox VE): {lab.url}",
        f"    TLS fingerprint {lab.fingerprint}",
        f"    root@pam password {lab.credentials.root_password}",
        f"  pxproxy management API: {api}",
        f"    bearer token (shown once): {token}",
        "",
        "Try:",
        f"  curl -s {api}/health",
        f"  curl -s {auth} {api}/api/v1/guests",
        f"  curl -s {auth} {api}/api/v1/nodes",
    ]
    if running is not None:
        lines += [
            f'  curl -s {auth} "{api}/api/v1/lookup?host={running.name}.{DEMO_DOMAIN}"',
            f'  curl -s {auth} "{api}/api/v1/lookup?ip={running.ip}"',
            f"  curl -s http://{running.ip}:{running.ports[0]}/"
            f"      # {running.name} itself, on its own address",
        ]
    proxy_host, _ = split_address(config.listen.proxy)
    proxy = f"{DEMO_DOMAIN}:{daemon.proxy_port}"
    if running is not None:
        lines.append(
            f"  curl -s http://{running.name}.{proxy}/      # {running.name} through the proxy"
        )
    if sleeping is not None:
        lines += [
            f"  curl -s http://{sleeping.name}.{proxy}/      # {sleeping.name} is asleep:"
            " this request wakes it",
            f"  a browser on http://{sleeping.name}.{proxy}/ gets a loading page that follows"
            " the wake",
        ]
    if running is not None:
        lines += [
            f"  curl -sN {auth} {api}/stats/{running.vmid}      # {running.name}: a line per"
            " second",
            f"  curl -sN {auth} {api}/journal/{running.node}      # follows the node journal",
        ]
    shell_guest = next((g for g in guests if g.status == "running" and g.type == "lxc"), None)
    if shell_guest is not None:
        lines.append(
            f'  curl -s {auth} -d \'{{"argv": ["cat", "/etc/hostname"]}}\''
            f" {api}/exec/{shell_guest.node}/{shell_guest.vmid}      # a command in a container"
        )
        lines.append(f"  PXPROXY_API={api} PXPROXY_TOKEN={token} pxproxy stats {shell_guest.name}")
    lines += [
        f"  curl -s {auth} {api}/api/v1/routes      # each route's wake state",
        "",
        f"Routes (proxy on {proxy_host}:{daemon.proxy_port}; *.localhost names resolve to"
        " loopback):",
    ]
    for route in config.routes:
        lines.append(
            f"  {', '.join(route.host or ())} -> {route.guest}:{route.port}"
            + (f"  (idle-watch, {route.idle.timeout:g}s)" if route.idle else "")
        )
    lines += [
        "",
        f"The daemon's log follows, its lines marked {DEMO_LOG_PREFIX.strip()}:"
        " wakes and idle stops as they happen.",
        "Ctrl-C stops the demo and everything it started.",
    ]
    return "\n".join(lines) + "\n"


def stopped_summary(lab: LabServer, daemon: Daemon | None, guest_servers: int) -> str:
    """What Ctrl-C stopped, in the order it was stopped."""
    parts = []
    if daemon is not None:
        parts.append(
            f"pxproxy (API on port {daemon.api_port}"
            + (f", proxy on port {daemon.proxy_port})" if daemon.proxy_port else ")")
        )
    parts.append(f"the lab's Proxmox API ({lab.url})")
    parts.append(
        f"{guest_servers} running guest{'' if guest_servers == 1 else 's'}' servers"
        f" (of {len(lab.cluster.guests)} guests)"
    )
    return "Stopped: " + "; ".join(parts) + ".\n"


async def run_demo(proxy: str, api: str, token: str | None, out: TextIO) -> None:
    token = token or secrets.token_urlsafe(24)
    lab = LabServer(LabCluster.default(guests=8, nodes=2, boot_time_s=2.0), port=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await lab.start()
    state_dir = tempfile.TemporaryDirectory(prefix="pxproxy-demo-")
    daemon: Daemon | None = None
    try:
        config = demo_config(lab, proxy, api, token, os.path.join(state_dir.name, "state.db"))
        daemon = Daemon(config)
        await daemon.start()
        await daemon.inventory.wait_until(
            lambda s: "lab" in s.clusters and any(g.ips for g in s.guests),
            FIRST_POLL_TIMEOUT_S,
        )
        out.write(instructions(lab, daemon, config, token))
        out.flush()
        await stop.wait()
    finally:
        if daemon is not None:
            await daemon.stop()
        serving = sum(1 for vmid in lab.cluster.guests if lab.servers.is_open(vmid))
        await lab.stop()
        state_dir.cleanup()
        out.write(stopped_summary(lab, daemon, serving))
        out.flush()
