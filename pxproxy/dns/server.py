"""The responder's listeners: UDP and TCP (RFC 7766: two-byte length prefix, several queries
per connection) on `dns.listen`, every address it names (`localhost`: 127.0.0.1 and ::1; an
IPv6 socket is IPv6-only). Port 0 asks the kernel once; UDP and TCP then share that port.

Answering is synchronous (wire.py), so neither protocol runs a task: a datagram or a complete
TCP message is answered in the callback that delivered it. Each client address has a token
bucket (rate_limit.py); a query over it is dropped and counted. TCP connections are bounded in
number, in query size and by an idle timeout; a client that does not read its answers stops
being read from (pause_reading) until it does.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import cast

from ..config.companion import DnsConfig
from ..config.models import split_address
from .answer import Answerer
from .counters import DnsCounters
from .rate_limit import TokenBuckets
from .source import DnsSource
from .wire import WireHandler

log = logging.getLogger(__name__)

TCP_IDLE_TIMEOUT_S = 10.0
MAX_TCP_CONNECTIONS = 256
# A query is a header, one question and an OPT record: far below this; more is not a query.
MAX_TCP_QUERY_BYTES = 4096
_PORT_ZERO_ATTEMPTS = 20


class DnsResponder:
    def __init__(
        self,
        settings: DnsConfig,
        source: DnsSource,
        *,
        clock: Callable[[], float] = time.monotonic,
        tcp_idle_timeout_s: float = TCP_IDLE_TIMEOUT_S,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self.settings = settings
        self.counters = DnsCounters()
        self.answerer = Answerer(settings, source)
        self.wire = WireHandler(self.answerer, self.counters)
        limit = settings.rate_limit
        self.limits = TokenBuckets(limit.per_client, limit.burst, clock)
        self.tcp_idle_timeout_s = tcp_idle_timeout_s
        self.max_tcp_connections = max_tcp_connections
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[_TcpConnection] = set()
        # (host, port) of each address listened on, UDP and TCP alike.
        self.bound: list[tuple[str, int]] = []

    @property
    def port(self) -> int:
        return self.bound[0][1]

    async def start(self) -> None:
        host, port = split_address(self.settings.listen)
        addresses = await _addresses(host, port)
        for attempt in range(_PORT_ZERO_ATTEMPTS if port == 0 else 1):
            try:
                await self._bind(addresses, port)
                break
            except OSError as exc:
                await self._unbind()
                # Port 0: the kernel's UDP port may be taken for TCP; ask again.
                if port != 0 or exc.errno != errno.EADDRINUSE or attempt + 1 == _PORT_ZERO_ATTEMPTS:
                    raise
        log.info(
            "dns: answering for %s on %s (UDP and TCP)",
            self.settings.zone,
            ", ".join(_text(h, p) for h, p in self.bound),
        )

    async def _bind(self, addresses: list[tuple[socket.AddressFamily, str]], port: int) -> None:
        loop = asyncio.get_running_loop()
        for family, ip in addresses:
            udp = _socket(family, socket.SOCK_DGRAM, ip, port)
            if port == 0:
                port = udp.getsockname()[1]
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
            self._udp.append(transport)
            tcp = _socket(family, socket.SOCK_STREAM, ip, port)
            server = await loop.create_server(lambda: _TcpConnection(self), sock=tcp, backlog=128)
            self._tcp.append(server)
            self.bound.append((ip, port))

    async def _unbind(self) -> None:
        for transport in self._udp:
            transport.close()
        for server in self._tcp:
            server.close()
        for connection in list(self._connections):
            connection.abort()
        for server in self._tcp:
            await server.wait_closed()
        self._udp.clear()
        self._tcp.clear()
        self.bound.clear()

    async def close(self) -> None:
        await self._unbind()

    # ------------------------------------------------------------------ used by the protocols

    def answer(self, data: bytes, client: str, *, udp: bool) -> bytes | None:
        if not self.limits.allow(client):
            self.counters.rate_limited += 1
            return None
        return self.wire.handle(data, udp=udp)

    def opened(self, connection: _TcpConnection) -> bool:
        if len(self._connections) >= self.max_tcp_connections:
            self.counters.tcp_refused += 1
            return False
        self._connections.add(connection)
        self.counters.tcp_connections = len(self._connections)
        return True

    def closed(self, connection: _TcpConnection) -> None:
        self._connections.discard(connection)
        self.counters.tcp_connections = len(self._connections)


async def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, str]]:
    """Every address a listen host stands for, IPv4 first, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    out: list[tuple[socket.AddressFamily, str]] = []
    for family, _type, _proto, _name, sockaddr in sorted(infos, key=lambda i: i[0]):
        entry = (family, str(sockaddr[0]))
        if family in (socket.AF_INET, socket.AF_INET6) and entry not in out:
            out.append(entry)
    if not out:
        raise OSError(errno.EADDRNOTAVAIL, f"dns.listen: {host!r} names no address")
    return out


def _socket(
    family: socket.AddressFamily, kind: socket.SocketKind, ip: str, port: int
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            # [::] takes IPv6 only, like every other listener (config/listener_clashes.py).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self._responder = responder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not a subclass of asyncio's: no isinstance check.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        out = self._responder.answer(data, str(addr[0]), udp=True)
        if out is not None and self._transport is not None:
            self._transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier answer (the client went away): nothing to do.
        log.debug("dns: UDP error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, responder: DnsResponder) -> None:
        self._responder = responder
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._client = ""
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        if not self._responder.opened(self):
            stream.abort()
            return
        self._transport = stream
        peer = stream.get_extra_info("peername")
        self._client = str(peer[0]) if peer else ""
        self._restart_idle()

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 2:
            size = int.from_bytes(buffer[:2], "big")
            if size > MAX_TCP_QUERY_BYTES or size == 0:
                self._responder.counters.malformed += 1
                self.abort()
                return
            if len(buffer) < 2 + size:
                break
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            out = self._responder.answer(message, self._client, udp=False)
            if out is not None:
                transport.write(len(out).to_bytes(2, "big") + out)
        self._restart_idle()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self._transport is not None:
            self._transport = None
            self._responder.closed(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _restart_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._responder.tcp_idle_timeout_s, self._idle_out)

    def _idle_out(self) -> None:
        self._idle = None
        if self._transport is not None:
            self._transport.close()
