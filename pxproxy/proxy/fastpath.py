"""A lean pooled HTTP/1.1 client for the common exchange: GET or HEAD, no body, plain HTTP.

aiohttp's `ClientSession.request()` builds a request object, a connector lease, a response
object and their timers for every request; for small keep-alive responses that is most of the
proxy's CPU. This client keeps aiohttp's own response protocol (`ResponseHandler`, with its C
parser, read timeout, flow control and chunked/close-delimited bodies) and only replaces the
per-request machinery around it: the request head is written directly and connections are
pooled here. A connection goes back to the pool only after its response was read to the end
and the guest did not ask to close it; everything else closes it.

The exceptions raised are aiohttp's (ServerDisconnectedError, ClientOSError, ClientConnectorError,
ConnectionTimeoutError, ClientResponseError, SocketTimeoutError), so callers handle them exactly
as they handle the session's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawResponseMessage
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

FAST_METHODS = frozenset({"GET", "HEAD"})
READ_BUFSIZE = 2**16  # aiohttp's default read_bufsize
MAX_LINE_SIZE = 8190  # aiohttp's client defaults
MAX_FIELD_SIZE = 8190
MAX_HEADERS = 128

_Key = tuple[str, int]


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
        self,
        pool: FastPool,
        key: _Key,
        proto: ResponseHandler,
        message: RawResponseMessage,
        payload: StreamReader,
    ) -> None:
        self._pool = pool
        self._key = key
        self._proto: ResponseHandler | None = proto
        self.status: int = message.code
        self.reason: str | None = message.reason
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content = payload

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
    def __init__(self, *, connect_timeout: float, read_timeout: float, keepalive_s: float) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive_s = keepalive_s
        self._idle: dict[_Key, list[tuple[float, ResponseHandler]]] = {}
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
            proto.set_response_params(
                skip_payload=skip_payload,
                read_until_eof=True,
                auto_decompress=False,
                read_timeout=self._read_timeout,
                read_bufsize=READ_BUFSIZE,
                max_line_size=MAX_LINE_SIZE,
                max_field_size=MAX_FIELD_SIZE,
                max_headers=MAX_HEADERS,
            )
            transport = proto.transport
            if transport is None:
                raise aiohttp.ServerDisconnectedError()
            transport.write(head)
            proto.start_timeout()
            while True:
                try:
                    message, payload = await proto.read()
                except HttpProcessingError as exc:
                    url = URL(f"http://{host}:{port}")
                    info = aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)
                    raise aiohttp.ClientResponseError(
                        info,
                        (),
                        status=exc.code,
                        message=exc.message,
                        headers=exc.headers,
                    ) from exc
                if message.code < 100 or message.code > 199 or message.code == 101:
                    break
        except BaseException:
            proto.close()
            raise
        return FastResponse(self, key, proto, message, payload)

    def _take(self, key: _Key) -> ResponseHandler | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        stale = time.monotonic() - self._keepalive_s
        while idle:
            since, proto = idle.pop()
            if since >= stale and proto.is_connected() and not proto.should_close:
                return proto
            proto.close()
        return None

    async def _connect(self, host: str, port: int) -> ResponseHandler:
        loop = asyncio.get_running_loop()
        address = host[1:-1] if host.startswith("[") else host
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: ResponseHandler(loop), address, port
                )
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host http://{host}:{port}"
            ) from exc
        except OSError as exc:
            key = ConnectionKey(address, port, False, False, None, None, None)
            raise aiohttp.ClientConnectorError(key, exc) from exc
        return proto

    def release(self, key: _Key, proto: ResponseHandler) -> None:
        if self._closed or proto.should_close or not proto.is_connected():
            proto.close()
            return
        idle = self._idle.setdefault(key, [])
        now = time.monotonic()
        stale = now - self._keepalive_s
        while idle and idle[0][0] < stale:
            # Connections idle past the keep-alive time are not reused: drop the oldest.
            idle.pop(0)[1].close()
        idle.append((now, proto))

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for _, proto in idle:
                proto.close()
        self._idle.clear()
