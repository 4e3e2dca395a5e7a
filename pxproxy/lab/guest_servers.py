"""Real network services for running lab guests: HTTP on `ports`, TCP echo on `tcp_ports`,
UDP echo on `udp_ports` (every datagram sent back to its sender, as a game server answers).

Each guest listens on its own loopback address. Every connection's bytes are counted into the
guest's netin/netout at the transport level, so the counters see exactly what crossed the wire.
Closing a guest stops its listeners and resets its open connections, as a powered-off host would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import WSMsgType, web

from .state import LabGuest

MAX_BIG_BYTES = 2 * 1024**3
_CHUNK = b"x" * 65536
SSE_INTERVAL_S = 0.1
_GUEST_KEY = web.AppKey("guest", LabGuest)
# Slow clients of long streams are not worth waiting for when a guest powers off.
_SHUTDOWN_TIMEOUT_S = 0.5


class _CountingTransport(asyncio.Transport):
    """Delegates to the real transport, counting written bytes as the guest's netout."""

    def __init__(self, inner: asyncio.Transport, guest: LabGuest) -> None:
        super().__init__()
        self._inner = inner
        self._guest = guest

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._guest.netout += len(data)
        self._inner.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self._inner.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


class _CountingProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: counts netin, hands it a counting transport."""

    def __init__(self, inner: asyncio.Protocol, guest: LabGuest, live: _Listeners) -> None:
        self._inner = inner
        self._guest = guest
        self._live = live
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        self._live.connections.add(self._transport)
        self._inner.connection_made(_CountingTransport(self._transport, self._guest))

    def data_received(self, data: bytes) -> None:
        self._guest.netin += len(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._live.connections.discard(self._transport)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _TcpEcho(asyncio.Protocol):
    def __init__(self, guest: LabGuest, live: _Listeners) -> None:
        self._guest = guest
        self._live = live
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have its interface.
        self._transport = cast(asyncio.Transport, transport)
        self._live.connections.add(self._transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._guest.netin += len(data)
        self._guest.netout += len(data)
        self._transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._live.connections.discard(self._transport)


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, guest: LabGuest) -> None:
        self._guest = guest
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self._transport is not None
        self._guest.netin += len(data)
        self._guest.netout += len(data)
        self._transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        return None  # a sender that went away: the next datagram is another's


@dataclass
class _Listeners:
    runner: web.AppRunner
    servers: list[asyncio.Server] = field(default_factory=list)
    connections: set[asyncio.Transport] = field(default_factory=set)
    datagrams: list[asyncio.DatagramTransport] = field(default_factory=list)


async def _index(request: web.Request) -> web.Response:
    guest = request.app[_GUEST_KEY]
    return web.Response(
        text=f"{guest.name} (vmid {guest.vmid})\n", headers={"X-Lab-Guest": str(guest.vmid)}
    )


async def _headers(request: web.Request) -> web.Response:
    """The request's headers as the guest got them: what a proxy in front forwarded."""
    return web.json_response({name: value for name, value in request.headers.items()})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def _sse(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    n = 0
    # Ends when the client leaves: the write raises, or the handler is cancelled.
    with contextlib.suppress(ConnectionError):
        while True:
            await resp.write(f"data: {n}\n\n".encode())
            n += 1
            await asyncio.sleep(SSE_INTERVAL_S)
    return resp


async def _big(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("bytes", "0")
    if not raw.isdigit() or int(raw) > MAX_BIG_BYTES:
        raise web.HTTPBadRequest(text=f"bytes must be an integer 0..{MAX_BIG_BYTES}\n")
    left = int(raw)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    view = memoryview(_CHUNK)
    while left > 0:
        piece = view[: min(left, len(_CHUNK))]
        await resp.write(piece)
        left -= len(piece)
    await resp.write_eof()
    return resp


async def _echo(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={"Content-Type": request.content_type or "application/octet-stream"}
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    async for chunk in request.content.iter_chunked(65536):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _app(guest: LabGuest) -> web.Application:
    app = web.Application()
    app[_GUEST_KEY] = guest
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/headers", _headers)
    app.router.add_get("/ws", _ws)
    app.router.add_get("/sse", _sse)
    app.router.add_get("/big", _big)
    app.router.add_post("/echo", _echo)
    return app


def _reset(transport: asyncio.Transport) -> None:
    """Drop a connection with RST, as a host that vanished would."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class GuestServers:
    """The GuestRuntime that opens real sockets on each guest's loopback address."""

    def __init__(self) -> None:
        self._open: dict[int, _Listeners] = {}
        self._lock = asyncio.Lock()

    def is_open(self, vmid: int) -> bool:
        return vmid in self._open

    def connections(self, vmid: int) -> int:
        live = self._open.get(vmid)
        return len(live.connections) if live else 0

    async def open(self, guest: LabGuest) -> None:
        """Listen on every port of the guest; on any failure nothing stays open."""
        async with self._lock:
            if guest.vmid in self._open:
                return
            runner = web.AppRunner(
                _app(guest),
                handle_signals=False,
                access_log=None,
                handler_cancellation=True,
                shutdown_timeout=_SHUTDOWN_TIMEOUT_S,
            )
            await runner.setup()
            live = _Listeners(runner)
            loop = asyncio.get_running_loop()
            http = runner.server
            assert http is not None

            def counting() -> asyncio.Protocol:
                return _CountingProtocol(http(), guest, live)

            def echo() -> asyncio.Protocol:
                return _TcpEcho(guest, live)

            factories: list[tuple[int, Callable[[], asyncio.Protocol]]] = [
                (port, counting) for port in guest.ports
            ] + [(port, echo) for port in guest.tcp_ports]
            try:
                for port, factory in factories:
                    live.servers.append(await loop.create_server(factory, guest.ip, port))
                for port in guest.udp_ports:
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda: _UdpEcho(guest), local_addr=(guest.ip, port)
                    )
                    live.datagrams.append(transport)
            except BaseException:
                await self._shutdown(live)
                raise
            self._open[guest.vmid] = live

    async def close(self, guest: LabGuest) -> None:
        """Stop listening and reset open connections; idempotent."""
        async with self._lock:
            live = self._open.pop(guest.vmid, None)
            if live is not None:
                await self._shutdown(live)

    async def close_all(self) -> None:
        async with self._lock:
            while self._open:
                _, live = self._open.popitem()
                await self._shutdown(live)

    @staticmethod
    async def _shutdown(live: _Listeners) -> None:
        for server in live.servers:
            server.close()
        for datagrams in live.datagrams:
            datagrams.close()  # later datagrams to the port are refused (ICMP unreachable)
        for transport in list(live.connections):
            _reset(transport)
        live.connections.clear()
        await live.runner.cleanup()
        for server in live.servers:
            await server.wait_closed()
