"""Helpers shared by the conformance and end-to-end tests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.pve.client import PveClient
from pxproxy.pve.tls import fingerprint_of_der

from .fakes import TestPve

if TYPE_CHECKING:
    from pxproxy.lab.server import LabServer

HOST = "127.0.0.1"


class Pki:
    def __init__(self, certfile: str, keyfile: str, der: bytes) -> None:
        self.certfile = certfile
        self.keyfile = keyfile
        self.fingerprint = fingerprint_of_der(der)


def cluster_config(pve: TestPve, pki: Pki, **overrides: object) -> ClusterConfig:
    """Password login pinned to the fake's certificate, unless overridden."""
    data: dict[str, object] = {
        "url": pve.url,
        "username": "root@pam",
        "password": "secret",
        "tls": {"fingerprint": pki.fingerprint},
        "poll_interval": "0.2s",
        "backoff_max": "0.5s",
        "timeout": "5s",
    }
    data.update(overrides)
    return ClusterConfig.model_validate(data)


def lab_cluster(lab: LabServer, **overrides: Any) -> dict[str, Any]:
    """The `proxmox:` entry for a lab: its API token, its pinned certificate, a fast poll, and
    loopback addresses kept (the lab's guests live on 127.10+.x.y)."""
    return lab.proxmox_entry(**{"poll_interval": "200ms", **overrides})


async def set_notes(
    lab: LabServer,
    vmid: int,
    description: str | None = None,
    tags: str | Sequence[str] | None = None,
) -> None:
    """Change a lab guest's notes and tags through the lab's real API, as a person would in
    the web UI (PUT .../config with the lab's token). None leaves a field alone; "" or no
    tags remove it."""
    guest = lab.cluster.guests[vmid]
    fields: dict[str, str] = {}
    delete: list[str] = []
    for key, value in (("description", description), ("tags", tags)):
        if value is None:
            continue
        text = value if isinstance(value, str) else ";".join(value)
        if text:
            fields[key] = text
        else:
            delete.append(key)
    async with PveClient(ClusterConfig.model_validate(lab_cluster(lab))) as client:
        await client.update_guest_config(guest.type, guest.node, vmid, delete=delete, **fields)


def token_config(pve: TestPve, pki: Pki, **overrides: object) -> ClusterConfig:
    pve.apitokens["pxproxy@pve!daemon"] = "s3cr3t-token-value"
    base: dict[str, object] = {
        "username": None,
        "password": None,
        "token_id": "pxproxy@pve!daemon",
        "secret": "s3cr3t-token-value",
    }
    base.update(overrides)
    return cluster_config(pve, pki, **base)


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 10.0, what: str = ""
) -> None:
    """Poll a condition until it holds; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def free_udp_port(*, tcp_too: bool = False) -> int:
    """A loopback UDP port free now (and its TCP twin too, with `tcp_too`: a DNS listener
    binds both, and ephemeral TCP ports of other tests' connections can hold the twin)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if not tcp_too:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
