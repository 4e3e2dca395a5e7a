"""The proxy's listening socket, with its own accept loop.

asyncio's and uvloop's servers log every failed accept; at the file-descriptor limit (EMFILE)
that is a line per attempt, for as long as the limit is hit. Here accepting pauses, one
WARNING says so, and accepting resumes a moment later (and is logged once more when it works
again). Accepted sockets become transports through `loop.connect_accepted_socket`, with TLS
when the listener has a context (proxy/tls.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from .server import ProxyServer

log = logging.getLogger(__name__)

BACKLOG = 1024
ACCEPTS_PER_WAKE = 64  # sockets taken per readiness callback, so a burst costs few wake-ups
RETRY_ACCEPT_S = 0.25  # after running out of descriptors
TLS_HANDSHAKE_TIMEOUT_S = 10.0
_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# Starts an owned task: HttpProxy.spawn, whose close() cancels and awaits it.
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[Any]"]


class ProxyListener:
    def __init__(
        self,
        sock: socket.socket,
        server: ProxyServer,
        tls: ssl.SSLContext | None,
        spawn: Spawn,
    ) -> None:
        self._sock = sock
        self._spawn = spawn  # the proxy's: it awaits the tasks when it closes
        self.server = server
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._reading = False
        self._starved = False
        self._retry: asyncio.TimerHandle | None = None
        self._handshakes: set[asyncio.Task[Any]] = set()
        self.accepted = 0
        self.starvations = 0  # times accepting paused at the descriptor limit
        self._start_reading()

    @property
    def port(self) -> int | None:
        if self._closed:
            return None
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting; the open connections are the server's to drain."""
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        if self._retry is not None:
            self._retry.cancel()
        for task in self._handshakes:
            task.cancel()
        self._sock.close()

    def _start_reading(self) -> None:
        if not self._reading and not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._reading = True

    def _stop_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._sock.fileno())
            self._reading = False

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                if self._starved:
                    # The queue drained without meeting the limit: the episode is over. (A
                    # connection let in by each freed descriptor is not the end of it.)
                    self._starved = False
                    log.info("proxy listener: accepting connections again")
                return
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as exc:
                if exc.errno in _OUT_OF:
                    self._starve(exc)
                    return
                log.warning("proxy listener: accept failed: %s", exc)
                return
            self.accepted += 1
            conn.setblocking(False)
            self._adopt(conn)

    def _starve(self, exc: OSError) -> None:
        self.starvations += 1
        if not self._starved:
            self._starved = True
            log.warning(
                "proxy listener: out of file descriptors (%s); accepting pauses and resumes "
                "as connections close (raise LimitNOFILE)",
                exc.strerror or exc,
            )
        self._stop_reading()
        self._retry = self._loop.call_later(RETRY_ACCEPT_S, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if self._closed:
            return
        self._start_reading()
        self._accept()  # at once: an empty queue now ends the episode

    def _adopt(self, conn: socket.socket) -> None:
        if self._tls is None:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._spawn(self._connect(conn), "pxproxy-accept")
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            if self._tls is None:
                await self._loop.connect_accepted_socket(self.server.protocol, conn)
            else:
                await self._loop.connect_accepted_socket(
                    self.server.protocol,
                    conn,
                    ssl=self._tls,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S,
                )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            # A failed TLS handshake or a client gone at once: nothing to answer.
            log.debug("proxy listener: connection dropped before it began: %s", exc)
            conn.close()


async def open_listener(
    server: ProxyServer,
    host: str,
    port: int,
    *,
    spawn: Spawn,
    tls: ssl.SSLContext | None = None,
    reuse_port: bool = False,
) -> ProxyListener:
    """Bind host:port ("" for all IPv4 addresses) and start accepting; OSError (a
    socket.gaierror for a name that does not resolve) when that cannot be done."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or "0.0.0.0", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Several processes on one port, the kernel spreading connections (the bench's
            # measurement of workers; not a config key, since it did not pay here).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return ProxyListener(sock, server, tls, spawn)
