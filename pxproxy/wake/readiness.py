"""Readiness probes: is the guest's service answering yet?

A probe makes ONE attempt with a short timeout; the waker polls it until its deadline. The HTTP
probe is the only aiohttp user in wake/, so the state machine is testable with a fake probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, Protocol

import aiohttp

from ..config.models import IdleConfig

# One attempt must not eat the whole wake budget; a booting guest often drops SYNs silently.
ATTEMPT_TIMEOUT_S = 1.0


class Probe(Protocol):
    async def check(self, host: str, port: int) -> bool:
        """One attempt: True when the service at host:port is ready."""

    async def close(self) -> None:
        """Release what the probe holds (connections, sessions)."""


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TcpProbe:
    """Ready when a TCP connection to the port is accepted."""

    def __init__(self, *, attempt_timeout_s: float = ATTEMPT_TIMEOUT_S) -> None:
        self._timeout_s = attempt_timeout_s

    async def check(self, host: str, port: int) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                _reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def close(self) -> None:
        return None


class HttpProbe:
    """Ready when GET path answers with any status below 500 (a 404 still means "up")."""

    def __init__(
        self,
        path: str,
        *,
        scheme: Literal["http", "https"] = "http",
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
    ) -> None:
        self._path = path if path.startswith("/") else "/" + path
        self._scheme = scheme
        self._timeout = aiohttp.ClientTimeout(total=attempt_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # force_close: a probe must not keep idle connections to the guest open, they
            # would count as traffic for nobody and pin sockets on the guest.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=False),
                timeout=self._timeout,
                auto_decompress=False,
            )
        return self._session

    async def check(self, host: str, port: int) -> bool:
        url = f"{self._scheme}://{_netloc(host, port)}{self._path}"
        try:
            async with self._http().get(url, allow_redirects=False) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def probe_for(idle: IdleConfig, scheme: Literal["http", "https"] = "http") -> Probe:
    """The probe an idle config asks for: HTTP when `ready.http` is set, else TCP connect."""
    if idle.ready.http:
        return HttpProbe(idle.ready.http, scheme=scheme)
    return TcpProbe()
