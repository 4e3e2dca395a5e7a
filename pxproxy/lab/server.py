"""The lab as one running thing: cluster state, the guests' servers, and the HTTPS API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .access import LabAccess
from .agent_exec import AgentExec
from .api import LabApi
from .certs import LabCertificate, make_certificate
from .consoles import Consoles, LabJournals
from .guest_servers import GuestServers
from .shell import ExecRecord
from .state import LabCluster, LabTask

TOKEN_ID = "pxproxy@pve!lab"


@dataclass(frozen=True, slots=True)
class LabCredentials:
    root_password: str
    token_id: str
    token_secret: str


class LabServer:
    """Start with `await start()`, stop with `await stop()`; everything it opened is closed."""

    def __init__(
        self,
        cluster: LabCluster,
        *,
        host: str = "127.0.0.1",
        port: int = 8006,
        root_password: str | None = None,
        token_secret: str | None = None,
        latency_s: float = 0.0,
        certificate: LabCertificate | None = None,
    ) -> None:
        self.cluster = cluster
        self.servers = GuestServers()
        cluster.runtime = self.servers
        self.credentials = LabCredentials(
            root_password=root_password or secrets.token_urlsafe(12),
            token_id=TOKEN_ID,
            token_secret=token_secret or secrets.token_urlsafe(24),
        )
        self.access = LabAccess(
            users={"root@pam": self.credentials.root_password},
            tokens={TOKEN_ID: self.credentials.token_secret},
        )
        self.api = LabApi(cluster, self.access, latency_s=latency_s)
        self.journals = LabJournals(cluster)
        self.consoles = Consoles(cluster, self.access, self.journals)
        self.consoles.register(self.api)
        self.agent = AgentExec(cluster, self.access, self.journals, self.consoles.record)
        self.agent.register(self.api)
        self.host = host
        self.port = port
        self.certificate = certificate or make_certificate((host,))
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def proxmox_entry(self, **overrides: Any) -> dict[str, Any]:
        """A `proxmox:` config entry for this lab: its API token, its certificate pinned by
        fingerprint, and loopback addresses kept (the lab's guests live on 127.10+.x.y)."""
        entry: dict[str, Any] = {
            "name": "lab",
            "url": self.url,
            "token_id": self.credentials.token_id,
            "secret": self.credentials.token_secret,
            "tls": {"fingerprint": self.fingerprint},
            "ips": {"loopback": True},
        }
        entry.update(overrides)
        return entry

    def guest_config_url(self, node: str, kind: str, vmid: int) -> str:
        """The API address of a guest's config (GET to read, PUT to change notes and tags)."""
        return f"{self.url}/api2/json/nodes/{node}/{kind}/{vmid}/config"

    @property
    def fingerprint(self) -> str:
        return self.certificate.fingerprint

    # -- faults and inspection, for tests and experiments ------------------------------------

    def set_node_offline(self, node: str, offline: bool = True) -> None:
        """Requests for the node answer 595 and its guests show status unknown."""
        self.cluster.set_node_online(node, not offline)

    def slow_api(self, latency_s: float) -> None:
        """Every API answer is delayed by latency_s (0 turns it off)."""
        self.api.latency_s = latency_s

    def expire_tickets(self) -> None:
        self.access.expire_tickets()

    def fail_start(self, vmid: int, message: str | None) -> None:
        """The guest's next starts end with TASK ERROR: message (None: start normally)."""
        self.cluster.guests[vmid].fail_start = message

    @property
    def tasks(self) -> list[LabTask]:
        """Every task the lab ran, oldest first."""
        return list(self.cluster.task_log)

    @property
    def shell_commands(self) -> list[ExecRecord]:
        """Every command a node shell or guest agent executed, oldest first."""
        return list(self.consoles.record)

    def history(self, vmid: int) -> list[str]:
        """The guest's states over time: stopped, starting, running, ..."""
        return self.cluster.history(vmid)

    async def stop_listening(self) -> None:
        """Close the API's listener and its connections (Proxmox unreachable); the guests and
        their servers stay as they are. `start_listening` opens it again on the same port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def start(self) -> None:
        await self.cluster.open()
        self.journals.start()
        await self.start_listening()

    async def start_listening(self) -> None:
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self.api.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.host,
            self.port,
            ssl_context=self.certificate.server_context(),
            reuse_address=True,
        )
        await site.start()
        if not self.port:
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self.consoles.close()
        await self.agent.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.journals.stop()
        await self.cluster.close()
        await self.servers.close_all()
