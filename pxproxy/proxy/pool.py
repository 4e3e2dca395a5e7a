"""Kept-alive connections to guests, per address: taken newest first, returned only when
their last response left them reusable, dropped when idle too long or closed by the guest."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .upstream_conn import UpstreamConnection, UpstreamFailure

# Pooled connections idle longer than this are dropped: many servers close theirs after a few
# seconds, and reusing a half-closed one costs a retry.
KEEPALIVE_S = 15.0
# Idle connections kept per guest address: enough for a busy site's concurrency (below it,
# every burst past the cap opens and closes connections: at 64 clients and a cap of 32, one
# request in ten paid for a connect), not for an attack's.
MAX_IDLE_PER_GUEST = 256


class PoolKey(NamedTuple):
    host: str  # an address, IPv6 without brackets
    port: int
    tls: bool


def _guest_tls() -> ssl.SSLContext:
    # Guests' HTTPS is self-signed as a rule, and the hop is on the LAN: encrypted, not verified.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


class UpstreamPool:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_s: float = KEEPALIVE_S,
        max_idle: int = MAX_IDLE_PER_GUEST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._idle: dict[PoolKey, deque[UpstreamConnection]] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def idle_count(self, key: PoolKey | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(idle) for idle in self._idle.values())

    def take(self, key: PoolKey) -> UpstreamConnection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = self._clock() - self._keepalive_s
        while idle:
            conn = idle.pop()
            if conn.idle_since >= stale and conn.takeable:
                return conn
            conn.close()
        return None

    async def connect(self, key: PoolKey) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if key.tls:
            tls = self._tls = self._tls or _guest_tls()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(key, self._read_timeout, self._forget),
                    key.host,
                    key.port,
                    ssl=tls,
                    server_hostname="" if tls is not None else None,
                )
        except TimeoutError:
            raise UpstreamFailure(
                "connect-timeout", f"no connection within {self._connect_timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamFailure("connect", f"cannot connect: {exc.strerror or exc}") from None
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """After a response read to its end: kept if the connection can serve another."""
        conn.detach()
        if self._closed or not conn.usable:
            conn.close()
            return
        conn.idle_since = now = self._clock()
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = deque()
        stale = now - self._keepalive_s
        while idle and (idle[0].idle_since < stale or len(idle) >= self._max_idle):
            # Idle past the keep-alive time, or beyond what a burst needs kept: drop the
            # oldest, so a burst to a guest that then goes quiet does not hold its sockets.
            idle.popleft().close()
        idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        """A connection closed (by either side): no longer one to hand out."""
        idle = self._idle.get(conn.key)
        if idle:
            with contextlib.suppress(ValueError):
                idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
