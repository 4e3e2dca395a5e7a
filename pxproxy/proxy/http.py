"""The HTTP reverse proxy: one low-level aiohttp handler for every client request.

Requests are routed by Host to a guest whose address is read from the live snapshot, wait for
(or wake) the guest through its gate, and are streamed both ways with backpressure: bodies
pass chunk by chunk, so neither a 100 MB upload nor a multi-GB download is ever held in memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from ..config.models import ProxyConfig, RouteConfig
from ..inventory.store import Inventory
from ..listeners.head_guard import HeadLimits
from ..listeners.server_header import brand
from ..problems import problem
from ..routing.route_set import upstream_prefix
from ..shutdown import STOPPING_MESSAGE, DaemonStopping, Stopping
from ..wake.contract import Gate, WakeError, WakeState
from . import waiting
from .fastpath import FAST_METHODS, FastPool, FastResponse, UpstreamConnectError, request_head
from .headers import TrustedProxies, client_response_headers, upstream_request_headers
from .loading_page import EVENTS_PATH
from .routes import RouteMatch, RouteTable
from .upstream import Upstream, UpstreamCache, UpstreamError

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the metrics route label of requests for unknown hosts
# Pooled connections to guests idle longer than this are dropped: many servers close theirs
# after a few seconds, and reusing a half-closed one costs a retry.
UPSTREAM_KEEPALIVE_S = 15.0
# Largest WebSocket message relayed; aiohttp assembles each message in memory.
MAX_WS_MESSAGE = 16 * 1024 * 1024
# gate.activity() at most this often per stream: cheap enough for every chunk of a download.
ACTIVITY_INTERVAL_S = 0.5
WS_CLOSE_TIMEOUT_S = 5.0
GOING_AWAY_TIMEOUT_S = 1.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_VALID_CLOSE = frozenset(range(1000, 1015)) - {1004, 1005, 1006}


class ProxyMetrics(Protocol):
    """What the proxy reports; the daemon adapts it to Prometheus."""

    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        """A request finished (for streams: when the stream ended). `upstream_seconds` is the
        time to the guest's response headers, None when no guest was asked."""

    def connection_opened(self, route: str) -> None:
        """A proxied exchange (request, stream or WebSocket) to a guest began."""

    def connection_closed(self, route: str) -> None: ...


class NoMetrics:
    def request(self, route: str, status: int, upstream_seconds: float | None) -> None:
        return None

    def connection_opened(self, route: str) -> None:
        return None

    def connection_closed(self, route: str) -> None:
        return None


class _BodyTooLarge(Exception):
    pass


# Bodies up to this size with a Content-Length are relayed in one write with their headers.
SMALL_BODY_BYTES = 64 * 1024


class _Activity:
    """Reports activity to the gate, at most every ACTIVITY_INTERVAL_S."""

    __slots__ = ("_gate", "_next")

    def __init__(self, gate: Gate | None) -> None:
        self._gate = gate
        self._next = 0.0

    def __call__(self) -> None:
        if self._gate is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + ACTIVITY_INTERVAL_S
            self._gate.activity()


class HttpProxy:
    def __init__(
        self,
        routes: RouteTable | Callable[[], RouteTable],
        inventory: Inventory,
        gates: Callable[[RouteConfig], Gate],
        config: ProxyConfig,
        metrics: ProxyMetrics | None = None,
        stopping: Stopping | None = None,
    ) -> None:
        # The live table (read per request: reloads and guests' notes swap it), or a fixed one.
        self._table: Callable[[], RouteTable] = (
            (lambda: routes) if isinstance(routes, RouteTable) else routes
        )
        # Set when the daemon begins to stop: held requests, WebSockets and SSE end properly.
        self._stopping = stopping or Stopping()
        self._inventory = inventory
        self._gates = gates
        self._config = config
        self._metrics: ProxyMetrics = metrics or NoMetrics()
        self._trusted = TrustedProxies(config.trusted_proxies)
        self._health = waiting.HealthChecks(config.health_checks)
        self._upstreams = UpstreamCache()
        self._session: aiohttp.ClientSession | None = None
        self._fast: FastPool | None = None
        # Background wakes started for browsers, one per route; cancelled by close().
        self._wakes: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def head_limits(self) -> HeadLimits:
        """What the listener's guard allows a request head (pxproxy/listeners/)."""
        cfg = self._config
        return HeadLimits(cfg.max_header_size, cfg.max_headers, cfg.header_timeout)

    def handler_kwargs(self) -> dict[str, Any]:
        """Settings of each connection's aiohttp RequestHandler. A line fits in the head, whose
        total size, header count and arrival time the listener's guard bounds."""
        cfg = self._config
        return {
            "keepalive_timeout": cfg.keepalive_timeout,
            "max_line_size": cfg.max_header_size,
            "max_field_size": cfg.max_header_size,
            "max_headers": cfg.max_headers,
            "access_log": None,
        }

    def make_runner(self, *, shutdown_timeout: float = 5.0) -> web.ServerRunner:
        """A runner for the low-level server; listen with pxproxy.listeners.serve.listen."""
        # A client that leaves cancels its handler: held requests and idle streams end.
        server = web.Server(self._serve, handler_cancellation=True, **self.handler_kwargs())
        return web.ServerRunner(server, handle_signals=False, shutdown_timeout=shutdown_timeout)

    async def _serve(self, request: web.BaseRequest) -> web.StreamResponse:
        response = await self.handle(request)
        if not response.prepared:  # those prepared early are branded where they are made
            brand(response)
        return response

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            cfg = self._config
            connector = aiohttp.TCPConnector(
                limit=0,  # one connection per concurrent stream: 1,000 WebSockets must fit
                limit_per_host=0,
                keepalive_timeout=UPSTREAM_KEEPALIVE_S,
                ssl=False,  # guests' HTTPS is self-signed as a rule; the hop is on the LAN
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout
                ),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return session

    def _fast_pool(self) -> FastPool:
        pool = self._fast
        if pool is None:
            cfg = self._config
            pool = self._fast = FastPool(
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.read_timeout,
                keepalive_s=UPSTREAM_KEEPALIVE_S,
            )
        return pool

    async def close(self) -> None:
        self._closed = True
        wakes = list(self._wakes.values())
        for task in wakes:
            task.cancel()
        await asyncio.gather(*wakes, return_exceptions=True)
        self._wakes.clear()
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ entry point

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path_qs = request.raw_path
        host = request.headers.get("Host")
        if not path_qs.startswith("/"):
            # absolute-form ("GET http://host/path"): its authority replaces Host (RFC 9112).
            try:
                url = URL(path_qs, encoded=True)
            except ValueError:
                url = URL()
            if not url.absolute or url.scheme not in ("http", "https"):
                return self._done(UNMATCHED, _text(400, "request target must be a path\n"))
            host, path_qs = url.authority, url.raw_path_qs
        if not host:
            return self._done(UNMATCHED, _text(400, "a Host header is required\n"))
        match = self._table().match(host)
        if match is None:
            return self._done(
                UNMATCHED,
                problem(404, "Not Found", f"no route for host {host!r}", host=host),
            )
        gate = self._gates(match.route)
        path = path_qs.split("?", 1)[0]
        if path.startswith(waiting.INTERNAL_PREFIX):
            return self._done(match.name, await self._internal(request, path, gate))
        health = self._health.matches(
            user_agent=request.headers.get("User-Agent"), path=path, peer=request.remote
        )
        if gate.state is not WakeState.READY:
            early = await self._wait(request, match, gate, health)
            if early is not None:
                return self._done(match.name, early)
        return await self._forward(request, match, path_qs, None if health else gate)

    def _done(
        self, route: str, response: web.StreamResponse, upstream_s: float | None = None
    ) -> web.StreamResponse:
        self._metrics.request(route, response.status, upstream_s)
        return response

    async def _internal(
        self, request: web.BaseRequest, path: str, gate: Gate
    ) -> web.StreamResponse:
        # Nothing under /.pxproxy/ reaches a guest.
        if path == EVENTS_PATH and request.method == "GET":
            return await waiting.wake_events(request, gate, self._stopping)
        return problem(404, "Not Found", f"no pxproxy endpoint {path}")

    # ------------------------------------------------------------------ waiting

    async def _wait(
        self, request: web.BaseRequest, match: RouteMatch, gate: Gate, health: bool
    ) -> web.StreamResponse | None:
        """None when the guest is ready to forward to; else the response to send instead."""
        route = match.route
        host = request.headers.get("Host", match.name)
        if self._stopping.is_set():
            return waiting.stopping_problem(guest=route.guest, host=host)
        if health:
            try:
                await gate.ready(wake=False)
            except WakeError as exc:
                return problem(
                    503,
                    "Guest asleep",
                    f"{exc.message} (health checks do not wake guests)",
                    headers={"Retry-After": "30", "Cache-Control": "no-store"},
                    guest=route.guest,
                    host=host,
                )
            return None
        if waiting.wants_html(request):
            self._start_wake(match, gate)
            return waiting.loading(name=route.guest, host=host, gate=gate)
        try:
            await self._stopping.race(gate.ready())
        except WakeError as exc:
            return waiting.wake_failed(exc, guest=route.guest, host=host)
        except DaemonStopping:
            return waiting.stopping_problem(guest=route.guest, host=host)
        return None

    def _start_wake(self, match: RouteMatch, gate: Gate) -> None:
        """Wake in the background while the browser shows the loading page."""
        index = match.name
        running = self._wakes.get(index)
        if self._closed or (running is not None and not running.done()):
            return
        task = asyncio.create_task(self._wake(match, gate), name=f"pxproxy-wake-{match.name}")
        self._wakes[index] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._wakes.get(index) is done:
                del self._wakes[index]

        task.add_done_callback(forget)

    @staticmethod
    async def _wake(match: RouteMatch, gate: Gate) -> None:
        try:
            await gate.ready()
        except WakeError as exc:
            # The loading page shows it through the progress events.
            log.info("wake for %s failed: %s", match.name, exc)
        except Exception:
            log.exception("wake for %s failed unexpectedly", match.name)

    # ------------------------------------------------------------------ forwarding

    async def _forward(
        self, request: web.BaseRequest, match: RouteMatch, path_qs: str, gate: Gate | None
    ) -> web.StreamResponse:
        """Forward to the guest. `gate` None: a health check, which is not activity."""
        try:
            upstream = self._upstreams.get(self._inventory.snapshot, match.route)
        except UpstreamError as exc:
            return self._done(
                match.name,
                problem(
                    502, "Bad Gateway", str(exc), guest=exc.guest, host=request.headers.get("Host")
                ),
            )
        self._metrics.connection_opened(match.name)
        hold = gate.hold() if gate is not None else contextlib.nullcontext()
        try:
            with hold:
                if gate is not None:
                    gate.activity()
                if _is_websocket(request):
                    return await self._websocket(request, match, upstream, path_qs, gate)
                return await self._http(request, match, upstream, path_qs, gate)
        finally:
            self._metrics.connection_closed(match.name)

    def _headers(self, request: web.BaseRequest, *, websocket: bool) -> CIMultiDict[str]:
        peer = request.remote
        return upstream_request_headers(
            request.headers,
            peer=peer,
            proto=request.scheme,
            trusted=peer in self._trusted,
            websocket=websocket,
        )

    async def _http(
        self,
        request: web.BaseRequest,
        match: RouteMatch,
        upstream: Upstream,
        path_qs: str,
        gate: Gate | None,
    ) -> web.StreamResponse:
        name = match.name
        limit = self._config.max_body_size
        length = request.content_length
        if limit and length is not None and length > limit:
            return self._done(name, _too_large(limit))
        headers = self._headers(request, websocket=False)
        expect = headers.pop("Expect", "").lower() == "100-continue"
        activity = _Activity(gate)
        too_large = False

        async def body() -> Any:
            nonlocal too_large
            if expect and request.version >= aiohttp.HttpVersion11:
                # Sent only now, after the size check: the point of Expect is to hear "no" early.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            seen = 0
            async for chunk in request.content.iter_any():
                seen += len(chunk)
                if limit and seen > limit:
                    too_large = True
                    raise _BodyTooLarge  # aborts the upload to the guest mid-body
                activity()
                yield chunk

        method = request.method
        target = upstream_prefix(match.route.path_prefix) + path_qs
        head = None
        if not request.body_exists and method in FAST_METHODS and upstream.scheme == "http":
            # The common exchange takes the lean client; the rest goes through aiohttp's.
            head = request_head(method, target, headers)
        data = body() if request.body_exists else None
        started = time.monotonic()
        resp: aiohttp.ClientResponse | FastResponse | None = None
        for attempt in (1, 2):
            try:
                if head is not None:
                    resp = await self._fast_pool().request(
                        upstream.host, upstream.port, head, skip_payload=method == "HEAD"
                    )
                else:
                    resp = await self._client().request(
                        method,
                        URL(upstream.origin + target, encoded=True),
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        compress=None,
                    )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled connection the guest had already closed: safe to retry once when
                # nothing of a body was sent (and a connect failure is not this case).
                retry = (
                    attempt == 1
                    and data is None
                    and method in _IDEMPOTENT
                    and not isinstance(exc, aiohttp.ClientConnectorError)
                )
                if not retry:
                    return self._done(name, self._upstream_error(exc, upstream, too_large))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return self._done(name, self._upstream_error(exc, upstream, too_large))
        assert resp is not None
        upstream_s = time.monotonic() - started
        if too_large:
            resp.close()
            return self._done(name, _too_large(limit), upstream_s)
        return await self._relay_response(request, resp, match, upstream, activity, upstream_s)

    async def _relay_response(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse | FastResponse,
        match: RouteMatch,
        upstream: Upstream,
        activity: _Activity,
        upstream_s: float,
    ) -> web.StreamResponse:
        headers = client_response_headers(resp.headers)
        length = resp.content_length
        if length is not None and length <= SMALL_BODY_BYTES and request.method != "HEAD":
            small = await self._small_response(request, resp, match, upstream, headers, upstream_s)
            if small is not None:
                activity()
                return small
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers=headers)
        # An event stream ends cleanly when pxproxy stops (its clients reconnect); any other
        # body runs on through the grace period, since a cut one would look complete.
        events = headers.get("Content-Type", "").startswith("text/event-stream")
        finished = False
        try:
            try:
                brand(out)  # the guest's own Server header, if any, passes
                await out.prepare(request)
            except ConnectionError:
                return out  # the client left; aiohttp drops the connection quietly
            content = resp.content
            while True:
                try:
                    chunk = await (
                        self._stopping.race(content.readany()) if events else content.readany()
                    )
                except DaemonStopping:
                    with contextlib.suppress(ConnectionError):
                        await out.write_eof()
                    return out
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    # The status line is gone already: all we can do is cut the client off,
                    # so it sees a truncated body rather than a complete-looking one.
                    log.warning(
                        "%s: guest %s broke off the response: %s",
                        match.name,
                        upstream.guest,
                        _describe(exc),
                    )
                    transport = request.transport
                    if transport is not None:
                        transport.close()
                    return out
                if not chunk:
                    break
                try:
                    # Returns once the client's socket took it: the backpressure that bounds
                    # memory for slow clients. Each chunk goes out at once (SSE needs that).
                    await out.write(chunk)
                except ConnectionError:
                    return out
                activity()
            try:
                await out.write_eof()
            except ConnectionError:
                return out
            finished = True
            return out
        finally:
            if finished:
                resp.release()
            else:
                resp.close()
            self._metrics.request(match.name, out.status, upstream_s)

    async def _small_response(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse | FastResponse,
        match: RouteMatch,
        upstream: Upstream,
        headers: CIMultiDict[str],
        upstream_s: float,
    ) -> web.Response | None:
        """A small body of known length, read whole and sent with its headers in one write:
        one syscall instead of three per response. Bounded by SMALL_BODY_BYTES."""
        try:
            body = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            resp.close()
            log.warning(
                "%s: guest %s broke off the response: %s",
                match.name,
                upstream.guest,
                _describe(exc),
            )
            response = web.Response(
                status=502, text=f"guest {upstream.guest} broke off its response\n"
            )
            self._metrics.request(match.name, 502, upstream_s)
            return response
        except BaseException:
            resp.close()  # cancelled (the client left): the connection is not reusable
            raise
        resp.release()
        headers.popall("Content-Length", None)  # web.Response sets it from the body
        out = web.Response(status=resp.status, reason=resp.reason, headers=headers, body=body)
        self._metrics.request(match.name, out.status, upstream_s)
        return out

    def _upstream_error(
        self, exc: BaseException, upstream: Upstream, too_large: bool
    ) -> web.Response:
        if too_large:
            return _too_large(self._config.max_body_size)
        guest = f"guest {upstream.guest} ({upstream.name})"
        cfg = self._config
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            status, detail = (
                504,
                f"{guest} did not accept a connection within {cfg.connect_timeout}s",
            )
        elif isinstance(exc, TimeoutError):
            status, detail = 504, f"{guest} sent no response within {cfg.read_timeout}s"
        elif isinstance(exc, (aiohttp.ClientConnectorError, UpstreamConnectError)):
            status, detail = 502, f"cannot connect to {guest}"
        else:
            status, detail = 502, f"{guest} failed before responding"
        # The address and the cause are for the operator: the client learns only what happened.
        log.info("%s (%s:%d): %s", detail, upstream.host, upstream.port, _describe(exc))
        title = "Gateway Timeout" if status == 504 else "Bad Gateway"
        return problem(status, title, detail, guest=upstream.guest)

    # ------------------------------------------------------------------ WebSocket

    async def _websocket(
        self,
        request: web.BaseRequest,
        match: RouteMatch,
        upstream: Upstream,
        path_qs: str,
        gate: Gate | None,
    ) -> web.StreamResponse:
        name = match.name
        refused = _handshake_refusal(request)
        if refused is not None:
            # Checked before the guest is asked: a bad handshake costs no upstream connection.
            return self._done(name, refused)
        headers = self._headers(request, websocket=True)
        protocols = tuple(
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in value.split(",")
            if p.strip()
        )
        scheme = "wss" if upstream.scheme == "https" else "ws"
        origin = f"{scheme}://{upstream.host}:{upstream.port}"
        url = URL(origin + upstream_prefix(match.route.path_prefix) + path_qs, encoded=True)
        started = time.monotonic()
        try:
            # The guest first: if it refuses, the client gets a plain 502, not a dead socket.
            upstream_ws = await self._client().ws_connect(
                url,
                headers=headers,
                protocols=protocols,
                autoclose=False,
                autoping=False,
                max_msg_size=MAX_WS_MESSAGE,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=WS_CLOSE_TIMEOUT_S),
            )
        except aiohttp.WSServerHandshakeError as exc:
            response = problem(
                502,
                "Bad Gateway",
                f"guest {upstream.guest} refused the WebSocket upgrade ({exc.status})",
                guest=upstream.guest,
            )
            return self._done(name, response)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return self._done(name, self._upstream_error(exc, upstream, False))
        upstream_s = time.monotonic() - started
        client_ws = web.WebSocketResponse(
            protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
            timeout=WS_CLOSE_TIMEOUT_S,
            autoclose=False,
            autoping=False,
            max_msg_size=MAX_WS_MESSAGE,
            compress=False,
        )
        try:
            brand(client_ws)
            await client_ws.prepare(request)
            activity = _Activity(gate)
            to_guest = asyncio.create_task(_pump(client_ws, upstream_ws, activity))
            to_client = asyncio.create_task(_pump(upstream_ws, client_ws, activity))
            stop = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait((to_guest, to_client, stop), return_when=asyncio.FIRST_COMPLETED)
                if stop.done() and not (to_guest.done() or to_client.done()):
                    for task in (to_guest, to_client):
                        task.cancel()
                    await asyncio.gather(to_guest, to_client, return_exceptions=True)
                    await _going_away(client_ws, upstream_ws)
                else:
                    # One side closed and the close went to the other; give its reply a moment.
                    await asyncio.wait((to_guest, to_client), timeout=WS_CLOSE_TIMEOUT_S)
            finally:
                for task in (to_guest, to_client, stop):
                    task.cancel()
                await asyncio.gather(to_guest, to_client, stop, return_exceptions=True)
        finally:
            await upstream_ws.close()
            if client_ws.prepared:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    await client_ws.close()
            self._metrics.request(name, 101, upstream_s)
        return client_ws


WebSocketLike = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def _going_away(client_ws: web.WebSocketResponse, upstream_ws: WebSocketLike) -> None:
    """pxproxy is stopping: 1001 Going Away to both sides, each close bounded by its timeout."""
    reason = STOPPING_MESSAGE.encode()
    for ws in (client_ws, upstream_ws):
        # A peer that does not answer the close frame soon is not waited for: the drain is short.
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError, TimeoutError):
            async with asyncio.timeout(GOING_AWAY_TIMEOUT_S):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=reason)


async def _pump(src: WebSocketLike, dst: WebSocketLike, activity: _Activity) -> None:
    """Relay messages one way until a close; pings, pongs and the close code pass through."""
    try:
        while True:
            msg = await src.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif kind is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif kind is WSMsgType.PING:
                await dst.ping(msg.data)
            elif kind is WSMsgType.PONG:
                await dst.pong(msg.data)
            elif kind is WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) and _sendable(msg.data) else 1000
                await dst.close(code=code, message=(msg.extra or "").encode()[:123])
                # Complete the closing handshake with the side that started it.
                await src.close(code=code)
                return
            else:  # CLOSING, CLOSED, ERROR: the side is gone without a close frame
                await dst.close(code=1011 if kind is WSMsgType.ERROR else 1001)
                return
            activity()
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        # Writing to a side that just went away: the other pump notices and closes.
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await dst.close(code=1011)


def _sendable(code: int) -> bool:
    """Close codes that may appear in a close frame (1005/1006 are for reporting only)."""
    return code in _VALID_CLOSE or 3000 <= code <= 4999


def _is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _handshake_refusal(request: web.BaseRequest) -> web.Response | None:
    """The client's side of the opening handshake (RFC 6455 4.2.1), or the answer to a bad one."""
    if request.version < aiohttp.HttpVersion11:
        return _text(400, "a WebSocket handshake needs HTTP/1.1\n")
    if request.headers.get("Sec-WebSocket-Version", "").strip() != "13":
        response = _text(426, "this server speaks WebSocket version 13\n")
        response.headers["Sec-WebSocket-Version"] = "13"
        return response
    key = request.headers.get("Sec-WebSocket-Key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return _text(400, "Sec-WebSocket-Key must be 16 bytes in base64\n")
    return None


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _too_large(limit: int) -> web.Response:
    response = problem(413, "Content Too Large", f"the request body is larger than {limit} bytes")
    # The rest of the body is not worth reading; a new connection starts clean.
    response.force_close()
    return response


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
