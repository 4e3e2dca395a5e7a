"""UDP routes: one socket per route, a session per client address, relaying datagrams to
guest:port (game servers: Factorio, Valheim, Satisfactory, Minecraft Bedrock).

A datagram from a new client opens a session: the session holds its route's gate (a client
playing keeps the guest awake) and gets a socket of its own, connected to the guest's address
as the live snapshot gives it at that moment (a guest that DHCP moved is followed by the next
session). The guest's replies go back to the client from the route's socket. While the
guest is not ready, new clients' datagrams are held (bounded in count and bytes, in order)
and the route's one driver task wakes it; once ready they are sent, in order, else dropped
and counted. A session with no datagram either way for `udp.session_timeout` ends.

The hot path is one dict lookup and one `sendto` per datagram, with plain integers counted:
no task, no clock read. Activity reaches idle-watch once per sweep (at most every second).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..config.models import DEFAULT_UDP, RouteConfig, UdpConfig, split_address
from ..inventory.store import Inventory
from ..listeners.bind_errors import ListenError, listening
from ..wake.contract import Gate, WakeError, WakeState, WakeTimeout
from .udp_stats import DropReason, UdpRouteStats, UdpStats
from .upstream import UpstreamError, resolve

log = logging.getLogger(__name__)

# Sessions are checked for idleness, and activity reported to idle-watch, this often (or
# four times per session timeout, when that is shorter).
SWEEP_INTERVAL_S = 1.0
# The same warning for one route (a guest without an address, say) at most this often: a
# client retrying every second must not write a log line every second.
WARN_INTERVAL_S = 30.0
# Closing sockets get this long to report that they closed.
_CLOSE_WAIT_S = 1.0

Address = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


def route_label(route: RouteConfig) -> str:
    """How logs and metrics name a UDP route: its listen address."""
    return f"udp:{route.listen}"


class _Session:
    """One client address of a route, from its first datagram until it goes quiet."""

    __slots__ = (
        "active",
        "backlog",
        "client",
        "closed",
        "congested",
        "gate",
        "idle_since",
        "release",
        "route",
        "timeout_s",
        "upstream",
    )

    def __init__(self, client: Address, route: RouteConfig, gate: Gate, now: float) -> None:
        self.client = client
        self.route = route  # as it was when the session began
        self.gate = gate
        self.timeout_s = (route.udp or DEFAULT_UDP).session_timeout
        self.upstream: asyncio.DatagramTransport | None = None  # None: still opening
        self.backlog: deque[bytes] = deque()  # datagrams held until the upstream is open
        self.active = False  # a datagram went through since the last sweep
        self.idle_since = now
        self.closed = False
        self.congested = False  # the socket to the guest cannot take more for now
        hold = gate.hold()
        hold.__enter__()
        self.release = hold


class _RouteSocket(asyncio.DatagramProtocol):
    """The listening socket of one route, its sessions and its wake buffer."""

    def __init__(self, proxy: UdpProxy, route: RouteConfig, stats: UdpRouteStats) -> None:
        self.proxy = proxy
        self.route = route
        self.settings: UdpConfig = route.udp or DEFAULT_UDP
        self.stats = stats
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Address, _Session] = {}
        self.opening: deque[_Session] = deque()
        self.buffered_datagrams = 0
        self.buffered_bytes = 0
        self.kick = asyncio.Event()
        self.driver: asyncio.Task[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.paused = False  # the socket's send buffer is full: replies are dropped
        self.warned: dict[str, float] = {}

    def use(self, route: RouteConfig) -> None:
        """The route changed in place (same listen address): new sessions follow it."""
        self.route = route
        self.settings = route.udp or DEFAULT_UDP

    # -- from clients ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        session = self.sessions.get(addr)
        if session is not None:
            upstream = session.upstream
            if upstream is None:
                self.hold_back(session, data)
                return
            if session.gate.state is WakeState.READY:
                if session.congested:
                    self.stats.drop("congested")
                    return
                session.active = True
                stats = self.stats
                stats.datagrams_to_guest += 1
                stats.bytes_to_guest += len(data)
                upstream.sendto(data)
                return
            # The guest went away under the session (stopped, or being stopped): its socket
            # leads nowhere now, and a new session wakes the guest again.
            self.end(session)
        self.open_session(addr, data)

    def open_session(self, addr: Address, data: bytes) -> None:
        if len(self.sessions) >= self.settings.max_sessions:
            self.stats.drop("sessions_full")
            self.warn("sessions_full", "udp.max_sessions (%d) reached", self.settings.max_sessions)
            return
        if not self.has_room(data):
            self.stats.drop("buffer_full")
            return
        route = self.route
        session = _Session(addr, route, self.proxy.gate_for(route), self.proxy.now)
        self.sessions[addr] = session
        self.stats.sessions += 1
        self.stats.sessions_opened += 1
        self.hold_back(session, data)
        self.opening.append(session)
        self.kick.set()

    def has_room(self, data: bytes) -> bool:
        settings = self.settings
        return (
            self.buffered_datagrams < settings.buffer_datagrams
            and self.buffered_bytes + len(data) <= settings.buffer_bytes
        )

    def hold_back(self, session: _Session, data: bytes) -> None:
        """Keep a datagram for a session that is not open yet (bounded, else dropped)."""
        if not self.has_room(data):
            self.stats.drop("buffer_full")
            return
        session.backlog.append(data)
        self.buffered_datagrams += 1
        self.buffered_bytes += len(data)

    def error_received(self, exc: Exception) -> None:
        # A client that went away (ICMP for a reply to it): nothing to do but go on.
        log.debug("UDP route %s: error from the client side: %s", self.route.listen, exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    # -- sessions -------------------------------------------------------------------------

    def opened(self, session: _Session, upstream: asyncio.DatagramTransport) -> None:
        """The session's socket to the guest is open: what it held goes first, in order."""
        stats = self.stats
        for data in session.backlog:
            stats.datagrams_to_guest += 1
            stats.bytes_to_guest += len(data)
            upstream.sendto(data)
        self.forget_backlog(session)
        session.upstream = upstream
        session.active = True

    def forget_backlog(self, session: _Session) -> int:
        """Empty a session's backlog; how many datagrams it held."""
        count = len(session.backlog)
        self.buffered_datagrams -= count
        self.buffered_bytes -= sum(len(d) for d in session.backlog)
        session.backlog.clear()
        return count

    def end(self, session: _Session, dropped: DropReason | None = None) -> None:
        """Close a session; what it still held is dropped (and counted as `dropped`)."""
        if session.closed:
            return
        session.closed = True
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        count = self.forget_backlog(session)
        if count and dropped is not None:
            self.stats.drop(dropped, count)
        if session.upstream is not None:
            session.upstream.close()
        self.stats.sessions -= 1
        session.release.__exit__(None, None, None)

    def end_all(self) -> None:
        for session in list(self.sessions.values()):
            self.end(session)
        self.opening.clear()

    def reply(self, session: _Session, data: bytes) -> None:
        transport = self.transport
        if transport is None or session.closed:
            return
        if self.paused:
            self.stats.drop("congested")
            return
        session.active = True
        stats = self.stats
        stats.datagrams_to_client += 1
        stats.bytes_to_client += len(data)
        transport.sendto(data, session.client)

    def warn(self, key: str, message: str, *args: object) -> None:
        now = self.proxy.now
        if now - self.warned.get(key, float("-inf")) < WARN_INTERVAL_S:
            return
        self.warned[key] = now
        route = self.route
        log.warning(
            "UDP route %s -> %s:%d: " + message,
            route.listen,
            route.guest,
            route.port,
            *args,
        )


class _UpstreamSide(asyncio.DatagramProtocol):
    """A session's socket connected to guest:port: replies go back to the client."""

    def __init__(self, owner: _RouteSocket, session: _Session) -> None:
        self._owner = owner
        self._session = session

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._owner.reply(self._session, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable (ConnectionRefusedError): nothing listens on the guest's port,
        # the guest is booting, or it is gone. Counted; the session lives on (it may be back).
        self._owner.stats.guest_errors += 1
        log.debug("UDP route %s: error from the guest side: %s", self._owner.route.listen, exc)

    def pause_writing(self) -> None:
        self._session.congested = True

    def resume_writing(self) -> None:
        self._session.congested = False


class UdpProxy:
    """Sockets for the UDP routes (`listen:` with `protocol: udp`), opened and closed as the
    route set changes (`apply`). A route that goes away ends its sessions (its socket was
    their way back to the clients).

    `gates(route)` gives a route's gate (`AlwaysReady` for routes without `idle:`). `clock`
    is read by the sweeps only (session idleness, activity), never per datagram.
    """

    def __init__(
        self,
        inventory: Inventory,
        gates: Callable[[RouteConfig], Gate],
        *,
        stats: UdpStats | None = None,
        routes: Sequence[RouteConfig] = (),
        key_for: Callable[[RouteConfig], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sweep_interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        for route in routes:
            if route.listen is None or route.protocol != "udp":
                raise ValueError(f"route {route.guest} is not a UDP route (listen, protocol: udp)")
        self._initial = tuple(routes)
        self._key_for = key_for or (lambda route: f"route {route_label(route)} listen")
        self._inventory = inventory
        self._gates = gates
        self.stats = stats if stats is not None else UdpStats()
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self.now = clock()  # as of the last sweep
        self._sockets: dict[str, _RouteSocket] = {}  # listen address -> its socket
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    def gate_for(self, route: RouteConfig) -> Gate:
        return self._gates(route)

    async def start(self) -> None:
        """Listen on every route's address; if one cannot bind, none stays open."""
        try:
            await self.apply(self._initial, strict=True)
        except BaseException:
            await self.close()
            raise

    async def apply(self, routes: Sequence[RouteConfig], *, strict: bool = False) -> list[str]:
        """Follow a new route set: open sockets for new addresses, close those gone (ending
        their sessions), and open new sessions by the new routes. An address that cannot be
        bound raises with `strict` (at start); otherwise it is logged and returned."""
        if self._closing:
            return []
        wanted = {r.listen: r for r in routes if r.listen is not None and r.protocol == "udp"}
        for listen in [a for a in self._sockets if a not in wanted]:
            self._retire(self._sockets.pop(listen))
            log.info("UDP route on %s removed: its sessions end", listen)
        errors: list[str] = []
        for listen, route in wanted.items():
            existing = self._sockets.get(listen)
            if existing is not None:
                existing.use(route)
                continue
            try:
                self._sockets[listen] = await self._open(listen, route)
            except ListenError as exc:
                if strict:
                    raise
                log.error("%s", exc)
                errors.append(str(exc))
                continue
            log.info("UDP route listening on %s -> %s:%d", listen, route.guest, route.port)
        if self._sockets and self._sweeper is None:
            self._sweeper = self._own(self._sweep_forever(), "udp-sweep")
        return errors

    async def _open(self, listen: str, route: RouteConfig) -> _RouteSocket:
        host, port = split_address(listen)
        loop = asyncio.get_running_loop()
        sock = _RouteSocket(self, route, self.stats.route(route_label(route)))
        bound = await listening(self._key_for(route), listen, _bind(host, port))
        try:
            await loop.create_datagram_endpoint(lambda: sock, sock=bound)
        except BaseException:
            bound.close()
            raise
        sock.driver = self._own(self._drive(sock), f"udp-wake {route_label(route)}")
        return sock

    def _own(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _retire(self, sock: _RouteSocket) -> None:
        if sock.driver is not None:
            sock.driver.cancel()  # awaited by close(), which awaits every task of ours
        sock.end_all()
        if sock.transport is not None:
            sock.transport.close()

    def bound_addresses(self) -> dict[str, tuple[str, int]]:
        """Listen address as configured -> the (host, port) actually bound (port 0 too)."""
        out: dict[str, tuple[str, int]] = {}
        for listen, sock in self._sockets.items():
            if sock.transport is not None and not sock.transport.is_closing():
                name = sock.transport.get_extra_info("sockname")
                out[listen] = (str(name[0]), int(name[1]))
        return out

    @property
    def active_sessions(self) -> int:
        return sum(len(s.sessions) for s in self._sockets.values())

    @property
    def held_datagrams(self) -> int:
        """Datagrams held for sessions that are not open yet (their guest waking)."""
        return sum(s.buffered_datagrams for s in self._sockets.values())

    async def close(self, grace_s: float = 0.0) -> None:
        """Close every socket and end every session at once: a datagram session has no end
        of its own to wait for, so `grace_s` (the TCP routes' drain) is not used."""
        self._closing = True
        sockets = list(self._sockets.values())
        self._sockets.clear()
        for sock in sockets:
            self._retire(sock)
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None
        waits = [sock.closed for sock in sockets if sock.transport is not None]
        if waits:
            await asyncio.wait(waits, timeout=_CLOSE_WAIT_S)

    # -- the wake and session opening, one task per route -----------------------------------

    async def _drive(self, sock: _RouteSocket) -> None:
        while True:
            await sock.kick.wait()
            sock.kick.clear()
            while sock.opening:
                session = sock.opening[0]
                if session.closed:
                    sock.opening.popleft()
                    continue
                # Once per batch, not per datagram or client: every session waiting on this
                # gate is opened (or dropped) by the one answer.
                gate = session.gate
                try:
                    await gate.ready()
                except WakeError as exc:
                    self._wake_failed(sock, gate, exc)
                    continue
                except Exception as exc:  # a bug in a gate must not end the route's wakes
                    log.exception("UDP route %s: waiting for the guest failed", sock.route.listen)
                    self._wake_failed(sock, gate, WakeError(session.route.guest, str(exc), 0))
                    continue
                while sock.opening and sock.opening[0].gate is gate:
                    await self._connect(sock, sock.opening.popleft())

    def _wake_failed(self, sock: _RouteSocket, gate: Gate, exc: WakeError) -> None:
        failed = [s for s in sock.opening if s.gate is gate]
        sock.opening = deque(s for s in sock.opening if s.gate is not gate)
        dropped = sum(len(s.backlog) for s in failed)
        for session in failed:
            sock.end(session, "wake_failed")
        why = (
            "guest not ready after wake_timeout" if isinstance(exc, WakeTimeout) else "wake failed"
        )
        sock.warn(
            "wake",
            "%s: %s; %d datagram(s) from %d client(s) dropped",
            why,
            exc.message,
            dropped,
            len(failed),
        )

    async def _connect(self, sock: _RouteSocket, session: _Session) -> None:
        if session.closed:
            return
        route = session.route
        try:
            # The live snapshot, read now: DHCP may have moved the guest since the last
            # session; an ambiguous ref is refused, as for every route.
            upstream = resolve(self._inventory.snapshot, route)
        except UpstreamError as exc:
            sock.end(session, "no_upstream")
            sock.warn("upstream", "%s; datagrams dropped", exc)
            return
        address = upstream.host.strip("[]")
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UpstreamSide(sock, session), remote_addr=(address, route.port)
            )
        except OSError as exc:
            sock.end(session, "send_failed")
            reason = exc.strerror or str(exc) or type(exc).__name__
            sock.warn("connect", "cannot open a socket to %s:%d: %s", address, route.port, reason)
            return
        if session.closed:  # ended meanwhile (its route removed, the proxy closing)
            transport.close()
            return
        sock.opened(session, transport)

    # -- idleness and activity ------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval())
            self.sweep(self._clock())

    def _interval(self) -> float:
        shortest = min(
            (s.settings.session_timeout for s in self._sockets.values()),
            default=self._sweep_interval_s * 4,
        )
        return max(0.01, min(self._sweep_interval_s, shortest / 4))

    def sweep(self, now: float) -> None:
        """End sessions quiet for their timeout; tell each gate with traffic about it."""
        self.now = now
        busy: dict[int, Gate] = {}
        for sock in self._sockets.values():
            for session in list(sock.sessions.values()):
                if session.upstream is None:
                    continue  # still opening: the wake has its own deadline
                if session.active:
                    session.active = False
                    session.idle_since = now
                    busy[id(session.gate)] = session.gate
                elif now - session.idle_since >= session.timeout_s:
                    sock.end(session)
        for gate in busy.values():
            gate.activity()


async def _bind(host: str, port: int) -> socket.socket:
    """A datagram socket bound to host:port. IPv6 only on an IPv6 address, as asyncio's TCP
    listeners are: `[::]:N` and `0.0.0.0:N` are two listeners (config/listener_clashes.py)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP, flags=socket.AI_PASSIVE
    )
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setblocking(False)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
