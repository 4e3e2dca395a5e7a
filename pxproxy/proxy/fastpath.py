"""A lean pooled HTTP/1.1 client for the common exchange: GET or HEAD, no body, plain HTTP.

aiohttp's `ClientSession.request()` builds a request object, a connector lease, a response
object and their timers for every request; for small keep-alive responses that is most of the
proxy's CPU. This client writes the request head directly on a pooled connection whose
responses an httptools parser reads (pxproxy/proxy/upstream_protocol.py). A connection goes back
to the pool only after its response was read to the end and the guest did not ask to close it;
everything else closes it. Connections idle past the keep-alive time, or closed by the guest,
are not reused.

The exceptions raised are aiohttp's public ones (ServerDisconnectedError, ClientOSError,
ConnectionTimeoutError, ClientResponseError, ClientPayloadError, SocketTimeoutError), plus
`UpstreamConnectError` for a refused connection, so callers handle them as they handle the
session's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

import aiohttp
from multidict import CIMultiDictProxy

from .upstream_protocol import ResponseBody, ResponseHead, UpstreamProtocol

FAST_METHODS = frozenset({"GET", "HEAD"})
# Idle connections kept per guest address: enough for a busy site's keep-alive, not a burst's.
MAX_IDLE_PER_GUEST = 32

_Key = tuple[str, int]


class UpstreamConnectError(aiohttp.ClientConnectionError):
    """The guest's address refused or could not be reached: nothing was sent, so this is no
    case for a retry. (aiohttp's ClientConnectorError needs its private ConnectionKey.)"""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(f"Cannot connect to host {host}:{port} [{os_error.strerror or os_error}]")
        self.host = host
        self.port = port
        self.os_error = os_error


def request_head(method: str, target: str, headers: Mapping[str, str]) -> bytes | None:
    """The request line and headers as aiohttp's client writes them for a bodiless GET/HEAD
    with a Host header; None when the exchange is not one for this client."""
    if "#" in target or "Host" not in headers:
        return None
    parts = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return None  # aiohttp refuses these: let it, with its error
        parts.append(f"{name}: {value}")
    parts.append("\r\n")
    try:
        return "\r\n".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        return None


class FastResponse:
    """The parts of aiohttp.ClientResponse the proxy uses."""

    __slots__ = ("_key", "_pool", "_proto", "content", "headers", "reason", "status")

    def __init__(
        self, pool: FastPool, key: _Key, proto: UpstreamProtocol, head: ResponseHead
    ) -> None:
        self._pool = pool
        self._key = key
        self._proto: UpstreamProtocol | None = proto
        self.status: int = head.status
        self.reason: str | None = head.reason
        self.headers: CIMultiDictProxy[str] = head.headers
        self.content: ResponseBody = proto.body

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None

    async def read(self) -> bytes:
        return await self.content.read()

    def release(self) -> None:
        """The body was read to its end: the connection may serve another request."""
        proto, self._proto = self._proto, None
        if proto is not None:
            self._pool.release(self._key, proto)

    def close(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.close()


class FastPool:
    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        keepalive_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive_s = keepalive_s
        self._idle: dict[_Key, list[tuple[float, UpstreamProtocol]]] = {}
        self._closed = False

    async def request(
        self, host: str, port: int, head: bytes, *, skip_payload: bool
    ) -> FastResponse:
        """Send `head` and read the response's status and headers."""
        key = (host, port)
        proto = self._take(key)
        if proto is None:
            proto = await self._connect(host, port)
        try:
            proto.send(head, skip_payload=skip_payload)
            response = await proto.read_head()
        except BaseException:
            proto.close()
            raise
        return FastResponse(self, key, proto, response)

    def _take(self, key: _Key) -> UpstreamProtocol | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = self._clock() - self._keepalive_s
        while idle:
            since, proto = idle.pop()
            if since >= stale and proto.open:
                return proto
            proto.close()
        return None

    async def _connect(self, host: str, port: int) -> UpstreamProtocol:
        loop = asyncio.get_running_loop()
        address = host[1:-1] if host.startswith("[") else host
        origin = f"http://{host}:{port}"
        read_timeout = self._read_timeout
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: UpstreamProtocol(origin, read_timeout), address, port
                )
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {origin}") from exc
        except OSError as exc:
            raise UpstreamConnectError(host, port, exc) from exc
        return proto

    def release(self, key: _Key, proto: UpstreamProtocol) -> None:
        if self._closed or not proto.reusable:
            proto.close()
            return
        proto.release()
        idle = self._idle.setdefault(key, [])
        now = self._clock()
        stale = now - self._keepalive_s
        while idle and (idle[0][0] < stale or len(idle) >= MAX_IDLE_PER_GUEST):
            # Idle past the keep-alive time, or beyond what a burst needs kept: drop the oldest,
            # so a burst to a guest that then goes quiet does not hold its sockets for ever.
            idle.pop(0)[1].close()
        idle.append((now, proto))

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for _, proto in idle:
                proto.close()
        self._idle.clear()
