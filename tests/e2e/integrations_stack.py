"""A `pxproxy run` subprocess polling a lab, with a read token: what Traefik, Prometheus and
ansible-inventory are pointed at in the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for
from .daemon_process import DaemonProcess, running_daemon

READ_TOKEN = "integrations-read-token-0123456789"


@dataclass
class Stack:
    daemon: DaemonProcess
    lab: LabServer

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.daemon.ports['api']}"

    @property
    def proxy_port(self) -> int:
        return self.daemon.ports["proxy"]

    async def get_json(self, path: str) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(self.api + path, headers={"Authorization": f"Bearer {READ_TOKEN}"}) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return json.loads(await resp.text())


@contextlib.asynccontextmanager
async def daemon_with_lab(lab: LabServer, tmp_path: Path, **config: Any) -> AsyncIterator[Stack]:
    """The daemon with `config` merged over a lab entry, loopback listeners and the read token;
    yielded once its inventory holds every lab guest and the running ones' addresses."""
    await lab.cluster.open()
    data: dict[str, Any] = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "api": {"tokens": [{"name": "reader", "secret": READ_TOKEN, "scopes": ["read"]}]},
        **config,
    }
    path = tmp_path / "pxproxy.yml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    async with running_daemon(path) as daemon:
        # Without routes the daemon opens no proxy listener.
        await daemon.wait_listening(*(("api", "proxy") if config.get("routes") else ("api",)))
        stack = Stack(daemon, lab)

        async def polled() -> bool:
            guests = await stack.get_json("/api/v1/guests")
            running = [g for g in guests if g["status"] == "running"]
            return len(guests) == len(lab.cluster.guests) and all(g["ips"] for g in running)

        await wait_for(polled, 20, "the daemon's first poll with every guest's address")
        try:
            yield stack
        finally:
            if daemon.proc.returncode is None:
                daemon.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await daemon.finish()
    assert "Traceback" not in daemon.text, daemon.text
