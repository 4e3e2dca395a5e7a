"""Readiness probes: is the guest's service answering yet?

A probe makes ONE attempt with a short timeout; the waker polls it until its deadline. The HTTP
probe is the only aiohttp user in wake/, so the state machine is testable with a fake probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Literal, Protocol

import aiohttp

from ..config.models import IdleConfig

# One attempt must not eat the whole wake budget; a booting guest often drops SYNs silently.
ATTEMPT_TIMEOUT_S = 1.0
# A closed UDP port answers an ICMP port unreachable at once; silence this long means that
# something holds the port (game servers ignore an empty datagram rather than answer it).
UDP_SILENCE_S = 0.3
# Hosts rate-limit their ICMP errors (Linux: one a second per peer after a burst of six):
# probing faster would take a suppressed "unreachable" for silence, that is for ready.
UDP_PROBE_SPACING_S = 1.0


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


class UdpProbe:
    """Ready when an empty datagram to the port is not refused within UDP_SILENCE_S (or is
    answered). A guest whose network is not up yet is silent too; the waker asks only once
    the power task succeeded, and game clients resend what went unanswered."""

    def __init__(
        self,
        *,
        silence_s: float = UDP_SILENCE_S,
        spacing_s: float = UDP_PROBE_SPACING_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._silence_s = silence_s
        self._spacing_s = spacing_s
        self._clock = clock
        self._sent_at = float("-inf")

    async def check(self, host: str, port: int) -> bool:
        wait = self._sent_at + self._spacing_s - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._sent_at = self._clock()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # Connected: the kernel hands this socket the ICMP error of its datagram.
            sock.connect((host, port))
            sock.send(b"")
            async with asyncio.timeout(self._silence_s):
                await asyncio.get_running_loop().sock_recv(sock, 1)
        except TimeoutError:  # before OSError, of which it is one
            return True
        except OSError:  # refused (nothing bound), host or network unreachable
            return False
        finally:
            sock.close()
        return True  # answered

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


def probe_for(
    idle: IdleConfig,
    scheme: Literal["http", "https"] = "http",
    protocol: Literal["tcp", "udp"] = "tcp",
) -> Probe:
    """The probe an idle config asks for: HTTP when `ready.http` is set, else a TCP connect,
    or for a UDP route a datagram that is not refused."""
    if idle.ready.http:
        return HttpProbe(idle.ready.http, scheme=scheme)
    return UdpProbe() if protocol == "udp" else TcpProbe()
