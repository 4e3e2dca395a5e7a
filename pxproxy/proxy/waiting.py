"""What a request meets while its guest is not ready: loading page, progress events, 503s.

Health checks (monitoring) are recognised here too: they must never wake a guest or keep one
awake, so they only learn whether it is up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import json
from collections.abc import Callable, Coroutine
from typing import Any

from ..config.models import HealthCheckRules, RouteConfig
from ..error_table import problem_for
from ..pages.document import PageLook, Pages, stage_of
from ..shutdown import DaemonStopping, Stopping
from ..wake.contract import Gate, WakeError, WakeProgress, WakeState
from .loading_page import EVENTS_PATH
from .replies import Reply, html_reply, problem, problem_reply, text_reply
from .request import ClientRequest
from .server import ClientConnection

INTERNAL_PREFIX = "/.pxproxy/"
# How soon a browser that ignores the page's script should try again.
LOADING_RETRY_AFTER_S = 5
# A wake silent this long gets a `heartbeat` event: proxies in front and browsers time out
# idle streams, and the page shows it is still alive.
HEARTBEAT_INTERVAL_S = 15.0
_MAX_SOURCE_CACHE = 4096


class HealthChecks:
    """Matches requests against `proxy.health_checks`; any rule is enough."""

    def __init__(self, rules: HealthCheckRules) -> None:
        self._agents = tuple(a.lower() for a in rules.user_agents if a)
        self._exact = frozenset(p for p in rules.paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in rules.paths if p.endswith("*"))
        self._networks = tuple(ipaddress.ip_network(s, strict=False) for s in rules.sources)
        self._sources: dict[str, bool] = {}

    def matches(self, *, user_agent: str | None, path: str, peer: str | None) -> bool:
        if user_agent and self._agents:
            lowered = user_agent.lower()
            if any(agent in lowered for agent in self._agents):
                return True
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            return True
        return bool(self._networks) and peer is not None and self._from_source(peer)

    def _from_source(self, peer: str) -> bool:
        known = self._sources.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer.split("%", 1)[0])
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self._networks)
            if len(self._sources) >= _MAX_SOURCE_CACHE:
                self._sources.clear()
            self._sources[peer] = known
        return known


def header(request: ClientRequest, name: str) -> str | None:
    """The first value of a request header (`name` in lowercase)."""
    for field, value in request.fields:
        if field.lower() == name:
            return value
    return None


def wants_html(request: ClientRequest) -> bool:
    """A browser navigating: it can show a page, so it gets one instead of waiting blind."""
    return request.method == "GET" and "text/html" in (header(request, "accept") or "")


def prefers_html(request: ClientRequest) -> bool:
    """A browser (navigating or posting a form): its errors are shown as pages."""
    return request.method != "HEAD" and "text/html" in (header(request, "accept") or "")


def wake_failed(exc: WakeError, *, guest: str, host: str) -> Reply:
    return problem_reply(problem_for(exc, guest=guest, host=host))


def asleep_for_health_check(exc: WakeError, *, guest: str, host: str) -> Reply:
    return problem(
        503,
        "Guest asleep",
        f"{exc.message} (health checks do not wake guests)",
        headers={"Retry-After": "30", "Cache-Control": "no-store"},
        guest=guest,
        host=host,
    )


def look_of(route: RouteConfig | None, host: str) -> PageLook:
    """The route's page settings (`page:`), or the defaults; a 404 has no route."""
    if route is None:
        return PageLook(name=host, guest="")
    if route.page is None:
        return PageLook(name=route.guest, guest=route.guest)
    return route.page.look(route.guest)


def wake_elapsed_s(gate: Gate) -> float | None:
    """How long the gate's wake has been running, where the gate tells (a Waker does)."""
    elapsed = getattr(gate, "wake_elapsed_s", None)
    return float(elapsed) if isinstance(elapsed, int | float) else None


def loading(
    *, pages: Pages, route: RouteConfig, host: str, gate: Gate, heartbeat_s: float
) -> Reply:
    """The page, at once: status 503 so nothing caches or indexes it as the site."""
    text = pages.loading(
        look_of(route, host),
        host=host,
        state=gate.state.value,
        step="starting",
        error=None,
        elapsed_s=wake_elapsed_s(gate),
        events_url=EVENTS_PATH,
        heartbeat_s=heartbeat_s,
    )
    return html_reply(
        503,
        text,
        headers=(("Retry-After", str(LOADING_RETRY_AFTER_S)), ("Cache-Control", "no-store")),
    )


def for_client(
    request: ClientRequest, reply: Reply, *, pages: Pages, route: RouteConfig | None
) -> Reply:
    """A problem as a browser should see it: an HTML page in the theme (same status and
    headers); everyone else keeps the problem document. Only error answers come here."""
    error = reply.problem
    if error is None or not prefers_html(request):
        return reply
    page = pages.error(
        look_of(route, request.host),
        host=request.host,
        status=error.status,
        title=error.title,
        detail=error.detail,
    )
    headers = [h for h in reply.headers if h[0].lower() not in ("content-type", "cache-control")]
    return html_reply(
        reply.status, page, headers=(*headers, ("Cache-Control", "no-store")), close=reply.close
    )


def stopping_problem(*, guest: str | None = None, host: str | None = None) -> Reply:
    """A request that was still waiting for its guest when pxproxy began to stop."""
    return problem_reply(problem_for(DaemonStopping(), guest=guest, host=host), close=True)


def handshake_refusal(request: ClientRequest) -> Reply | None:
    """The client's side of the opening handshake (RFC 6455 4.2.1), or the answer to a bad one."""
    if not request.http11:
        return text_reply(400, "a WebSocket handshake needs HTTP/1.1\n")
    if (header(request, "sec-websocket-version") or "").strip() != "13":
        return text_reply(
            426,
            "this server speaks WebSocket version 13\n",
            headers=(("Sec-WebSocket-Version", "13"),),
        )
    key = (header(request, "sec-websocket-key") or "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return text_reply(400, "Sec-WebSocket-Key must be 16 bytes in base64\n")
    return None


_EVENTS_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: pxproxy\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n"  # no buffering in front of us
    b"Transfer-Encoding: chunked\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _event(progress: WakeProgress, elapsed_s: float | None) -> bytes:
    state = progress.state.value
    data = json.dumps(
        {
            "state": state,
            "step": progress.step,
            "error": progress.error,
            "stage": stage_of(state, progress.step),
            "elapsed": None if elapsed_s is None else round(elapsed_s, 1),
        }
    )
    return f"data: {data}\n\n".encode()


def _heartbeat(elapsed_s: float | None) -> bytes:
    data = json.dumps({"elapsed": None if elapsed_s is None else round(elapsed_s, 1)})
    return f"event: heartbeat\ndata: {data}\n\n".encode()


class WakeEvents:
    """Server-Sent Events of the wake's progress, ending when the guest is ready or failed,
    or when pxproxy stops (the page reconnects to the next instance). Watching never wakes
    anything: the wake was started when the page was served. A wake silent for
    `heartbeat_s` gets a `heartbeat` event (counted in `heartbeats`)."""

    def __init__(
        self,
        conn: ClientConnection,
        gate: Gate,
        stopping: Stopping,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        heartbeat_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self._spawn = spawn
        self._heartbeat_s = heartbeat_s
        self.heartbeats = 0
        self._conn = conn
        self._gate = gate
        self._stopping = stopping
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        request = self._conn.request
        keep = request is not None and request.keep_alive and not self._conn.stopping
        self._keep = keep
        self._conn.write(_EVENTS_HEAD + (b"\r\n" if keep else b"Connection: close\r\n\r\n"))
        self._conn.write(_chunk(b"retry: 2000\n\n"))
        self._task = self._spawn(self._relay(), "pxproxy-wake-events")

    async def _relay(self) -> None:
        with contextlib.suppress(DaemonStopping):
            await self._stopping.race(self._follow())
        self._task = None
        self._conn.write(b"0\r\n\r\n")
        self._conn.finish(keep_alive=self._keep)

    async def _follow(self) -> None:
        updates = aiter(self._gate.progress())
        # One pending read of the progress at a time, so that waiting for it can time out
        # for a heartbeat without ending the progress iterator.
        pending: asyncio.Future[WakeProgress] = asyncio.ensure_future(anext(updates))
        try:
            while True:
                done, _ = await asyncio.wait((pending,), timeout=self._heartbeat_s)
                if not done:
                    if not self._conn.writing_paused:  # a reader that far behind needs none
                        self.heartbeats += 1
                        self._conn.write(_chunk(_heartbeat(wake_elapsed_s(self._gate))))
                    continue
                progress = pending.result()
                if self._conn.writing_paused:
                    self._writable.clear()
                    await self._writable.wait()
                self._conn.write(_chunk(_event(progress, wake_elapsed_s(self._gate))))
                if progress.state in (WakeState.READY, WakeState.FAILED):
                    return
                pending = asyncio.ensure_future(anext(updates))
        except StopAsyncIteration:
            return
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending

    def client_body(self, data: bytes) -> None:
        return None

    def client_body_end(self) -> None:
        return None

    def client_flush(self) -> None:
        return None

    def client_writable(self) -> None:
        self._writable.set()

    def client_lost(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def stop(self) -> None:
        return None  # the relay races the stop signal itself
