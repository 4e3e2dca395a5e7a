"""TCP routes: one listener per route, relaying bytes to guest:port (game servers and the like).

Each accepted connection holds its route's gate for its whole life (an open relay keeps the guest
awake), waits for the gate to be ready (waking a sleeping guest while the client is held and
nothing is read from it), resolves the guest's address from the live snapshot at that moment (a
guest that moved to a new address is followed without a reload), then relays both ways with
bounded buffers and half-close. Every connection is a task owned here; close() ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..config.models import RouteConfig, split_address
from ..inventory.store import Inventory
from ..listeners.bind_errors import ListenError, listening
from ..wake.contract import Gate, WakeError, WakeTimeout
from .upstream import UpstreamError, resolve

log = logging.getLogger(__name__)

# One read's worth; with drain() after every write at most about this much (plus the transports'
# own high-water marks) sits in memory per direction, however slow the other side is.
CHUNK = 64 * 1024
# Activity and byte counts are reported at most this often per connection: a busy relay moves
# thousands of chunks a second, the idle deadline and metrics need nothing like that.
REPORT_INTERVAL_S = 1.0
# A relay that ended normally gets this long to flush what it still buffers, then is aborted.
_CLOSE_GRACE_S = 5.0


class TcpHooks(Protocol):
    """Metrics for TCP routes; `route` is `route_label()` of the route."""

    def connection_opened(self, route: str) -> None: ...

    def connection_closed(self, route: str) -> None: ...

    def tcp_bytes(self, route: str, to_guest: int, to_client: int) -> None:
        """Bytes relayed since the last report (reported now and then, and at close)."""


def route_label(route: RouteConfig) -> str:
    """How logs and metrics name a TCP route: its listen address."""
    return f"tcp:{route.listen}"


class _Refused(Exception):
    """The connection cannot be relayed; the message is the log line's reason."""


@dataclass(slots=True)
class _Flow:
    """Per-connection counters, reported in batches (see REPORT_INTERVAL_S)."""

    to_guest: int = 0
    to_client: int = 0
    reported_at: float = 0.0


class TcpProxy:
    """Listeners for the TCP routes (`listen:` set), opened and closed as the route set
    changes (`apply`); a connection open on a route that goes away is left to finish.

    `gates(route)` gives a route's gate (`AlwaysReady` for routes without `idle:`).
    """

    def __init__(
        self,
        inventory: Inventory,
        gates: Callable[[RouteConfig], Gate],
        *,
        connect_timeout_s: float,
        hooks: TcpHooks | None = None,
        routes: Sequence[RouteConfig] = (),
        key_for: Callable[[RouteConfig], str] | None = None,
    ) -> None:
        for route in routes:
            if route.listen is None:
                raise ValueError(f"route {route.guest} has no listen address: not a TCP route")
        self._initial = tuple(routes)
        # How a bind error names the route (the config's key path, where it has one).
        self._key_for = key_for or (lambda route: f"route {route_label(route)} listen")
        self._routes: dict[str, RouteConfig] = {}  # listen address -> its route now
        self._inventory = inventory
        self._gates = gates
        self._connect_timeout_s = connect_timeout_s
        self._hooks = hooks
        self._servers: dict[str, asyncio.Server] = {}
        self._closed_servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        """Listen on every route's address; if one cannot bind, none stays open."""
        try:
            await self.apply(self._initial, strict=True)
        except BaseException:
            await self.close()
            raise

    async def apply(self, routes: Sequence[RouteConfig], *, strict: bool = False) -> list[str]:
        """Follow a new route set: listen on new addresses, stop listening on those gone
        (their open connections go on), and relay new connections by the new routes. An
        address that cannot be bound raises with `strict` (at start); otherwise it is
        logged and returned, and the other routes are served."""
        if self._closing:
            return []  # closed for good: no listener may open after close()
        wanted = {r.listen: r for r in routes if r.listen is not None}
        for listen in [a for a in self._servers if a not in wanted]:
            server = self._servers.pop(listen)
            server.close()
            self._closed_servers.append(server)
            log.info("TCP route on %s removed: no longer listening", listen)
        self._routes = dict(wanted)
        errors: list[str] = []
        for listen, route in wanted.items():
            if listen in self._servers:
                continue
            host, port = split_address(listen)
            try:
                self._servers[listen] = await listening(
                    self._key_for(route),
                    listen,
                    asyncio.start_server(self._accept_callback(listen), host, port, limit=CHUNK),
                )
            except ListenError as exc:
                if strict:
                    raise
                log.error("%s", exc)
                errors.append(str(exc))
                continue
            log.info("TCP route listening on %s -> %s:%d", listen, route.guest, route.port)
        return errors

    def bound_addresses(self) -> dict[str, tuple[str, int]]:
        """Listen address as configured -> the (host, port) actually bound (port 0 too)."""
        out: dict[str, tuple[str, int]] = {}
        for listen, server in self._servers.items():
            if server.sockets:
                name = server.sockets[0].getsockname()
                out[listen] = (str(name[0]), int(name[1]))
        return out

    @property
    def active_connections(self) -> int:
        return len(self._tasks)

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop listening; give relayed connections `grace_s` to end by themselves, then reset
        the rest and await every task."""
        self._closing = True
        servers = [*self._servers.values(), *self._closed_servers]
        self._servers.clear()
        self._closed_servers.clear()
        for server in servers:
            server.close()
        if grace_s > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        # Tasks may still be appearing from connections accepted just before close(); those see
        # _closing and end at once, so loop until the set stays empty.
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    # -- per connection -------------------------------------------------------------------------

    def _accept_callback(
        self, listen: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
        # A plain function, not a coroutine: asyncio would create (and not track) the task for a
        # coroutine callback; this way every connection task is ours to cancel and await.
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            route = self._routes.get(listen)
            if self._closing or route is None:
                writer.transport.abort()
                return
            task = asyncio.get_running_loop().create_task(
                self._serve(route, reader, writer),
                name=f"tcp-relay {route_label(route)}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return accepted

    async def _serve(
        self,
        route: RouteConfig,
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
    ) -> None:
        label = route_label(route)
        peer = _peer(client)
        gate = self._gates(route)
        upstream: asyncio.StreamWriter | None = None
        clean = False
        if self._hooks is not None:
            self._hooks.connection_opened(label)
        try:
            with gate.hold():
                try:
                    # Returns at once for a ready guest; wakes (single-flight) a sleeping one.
                    # The client is not read meanwhile: its early bytes wait (at most the
                    # reader's limit, then the socket buffers) and are relayed once ready.
                    await gate.ready()
                except WakeTimeout as exc:
                    raise _Refused(f"guest not ready after wake_timeout: {exc.message}") from None
                except WakeError as exc:
                    raise _Refused(f"wake failed: {exc.message}") from None
                gate.activity()
                upstream_reader, upstream = await self._connect(route)
                _keepalive(client)
                _keepalive(upstream)
                clean = await self._relay(
                    label, gate, client_reader, client, upstream_reader, upstream
                )
        except _Refused as why:
            log.warning(
                "TCP route %s -> %s:%d: %s; closing the connection from %s",
                route.listen,
                route.guest,
                route.port,
                why,
                peer,
            )
        except Exception:
            log.exception("TCP route %s: relay for %s failed", route.listen, peer)
        finally:
            await _close_all((client, upstream), graceful=clean)
            if self._hooks is not None:
                self._hooks.connection_closed(label)

    async def _connect(
        self, route: RouteConfig
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # The live snapshot, read now: DHCP may have moved the guest since the last connection.
        # The same resolution as HTTP routes: an ambiguous ref is refused, never settled by
        # "the one that runs" (a guest renamed in another cluster must not take the traffic).
        try:
            upstream = resolve(self._inventory.snapshot, route)
        except UpstreamError as exc:
            raise _Refused(str(exc)) from None
        address = upstream.host.strip("[]")
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await asyncio.open_connection(address, route.port, limit=CHUNK)
        except TimeoutError:
            raise _Refused(
                f"connecting to {address}:{route.port} timed out after {self._connect_timeout_s}s"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise _Refused(f"cannot connect to {address}:{route.port}: {reason}") from None

    async def _relay(
        self,
        label: str,
        gate: Gate,
        client_reader: asyncio.StreamReader,
        client: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> bool:
        """Relay until both directions ended; True when both ended with a clean EOF."""
        flow = _Flow(reported_at=time.monotonic())
        results: list[bool] = []

        def count(to_guest: int, to_client: int) -> None:
            flow.to_guest += to_guest
            flow.to_client += to_client
            now = time.monotonic()
            if now - flow.reported_at >= REPORT_INTERVAL_S:
                self._report(label, gate, flow, now)

        async def pump(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, to_guest: bool
        ) -> None:
            try:
                while data := await src.read(CHUNK):
                    dst.write(data)
                    # Backpressure: a slow receiver stops us reading from the sender.
                    await dst.drain()
                    if to_guest:
                        count(len(data), 0)
                    else:
                        count(0, len(data))
                # EOF from the sender: pass the half-close on, keep the other direction open.
                if dst.can_write_eof() and not dst.is_closing():
                    dst.write_eof()
                else:
                    dst.close()
                results.append(True)
            except OSError:
                # One side failed: close both, which ends the other pump's read too.
                client.transport.abort()
                upstream.transport.abort()
                results.append(False)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(pump(client_reader, upstream, True))
                group.create_task(pump(upstream_reader, client, False))
        finally:
            self._report(label, gate, flow, time.monotonic())
        return all(results)

    def _report(self, label: str, gate: Gate, flow: _Flow, now: float) -> None:
        flow.reported_at = now
        if flow.to_guest or flow.to_client:
            gate.activity()
            if self._hooks is not None:
                self._hooks.tcp_bytes(label, flow.to_guest, flow.to_client)
            flow.to_guest = flow.to_client = 0


def _peer(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("peername")
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name)


def _keepalive(writer: asyncio.StreamWriter) -> None:
    # A client that vanished without a FIN would otherwise hold its guest awake forever.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


async def _close_all(writers: tuple[asyncio.StreamWriter | None, ...], *, graceful: bool) -> None:
    live = [w for w in writers if w is not None]
    if not graceful:
        # Refused, failed or cancelled: nothing left worth flushing.
        for writer in live:
            writer.transport.abort()
    for writer in live:
        writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE_S):
            for writer in live:
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        # A receiver that never reads keeps close() waiting to flush; don't wait on it.
        for writer in live:
            writer.transport.abort()
    except asyncio.CancelledError:
        for writer in live:
            writer.transport.abort()
        raise
