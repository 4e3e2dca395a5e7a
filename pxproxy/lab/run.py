"""`pxproxy lab`: the simulated cluster on its own, until Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..config.models import is_loopback_host, split_address
from .server import LabServer
from .state import LabCluster


class LabSetupError(Exception):
    """The lab cannot start as asked; the message says why."""


def load_scenario(path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabSetupError(f"{path}: cannot read the scenario: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise LabSetupError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LabSetupError(f"{path}: a scenario is a mapping with nodes and guests")
    return data


def build_cluster(guests: int, nodes: int, boot_time_s: float, scenario: str | None) -> LabCluster:
    if scenario:
        try:
            return LabCluster.from_spec(load_scenario(scenario))
        except ValueError as exc:
            raise LabSetupError(f"{scenario}: {exc}") from None
    if not 0 <= guests <= 5000 or not 1 <= nodes <= 64:
        raise LabSetupError("--guests must be 0..5000 and --nodes 1..64")
    return LabCluster.default(guests=guests, nodes=nodes, boot_time_s=boot_time_s)


def lab_address(listen: str) -> tuple[str, int]:
    try:
        host, port = split_address(listen)
    except ValueError as exc:
        raise LabSetupError(str(exc)) from None
    if not is_loopback_host(host):
        raise LabSetupError(
            f"the lab listens on loopback only (it is a test tool), not {host}; "
            "use 127.0.0.1 or [::1]"
        )
    return host, port


def describe(server: LabServer, out: TextIO) -> None:
    creds = server.credentials
    out.write(
        f"pxproxy lab: a simulated Proxmox VE API on {server.url}\n"
        f"  TLS fingerprint (SHA-256): {server.fingerprint}\n"
        f"  password login: root@pam / {creds.root_password}\n"
        f"  API token:      {creds.token_id} = {creds.token_secret}\n"
        f"  guests (each serves HTTP on its own loopback address while running):\n"
    )
    for g in sorted(server.cluster.guests.values(), key=lambda g: g.vmid):
        ports = ",".join(
            [*(str(p) for p in (*g.ports, *g.tcp_ports)), *(f"{p}/udp" for p in g.udp_ports)]
        )
        out.write(f"    {g.id:<10} {g.name:<14} {g.node:<6} {g.status:<8} {g.ip}:{ports}\n")
    out.flush()


async def run_lab(
    listen: str, guests: int, nodes: int, boot_time_s: float, scenario: str | None, out: TextIO
) -> None:
    host, port = lab_address(listen)
    server = LabServer(build_cluster(guests, nodes, boot_time_s, scenario), host=host, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        describe(server, out)
        out.write("Ctrl-C stops the lab.\n")
        out.flush()
        await stop.wait()
    finally:
        await server.stop()
