"""`GET /stats/{ref}` and `GET /stats/node/{node}`: live statistics from the StatsHub.

One sample per second as text lines (default), NDJSON (`?format=json`), SSE (`Accept:
text/event-stream`) or WebSocket messages (upgrade); `?stream=0` answers one sample. The first
event is awaited before anything is sent, so an offline node or a vanished guest gets a proper
problem answer; later errors are stream events and the stream goes on (the hub backs off).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web

from ...shutdown import STOPPING_MESSAGE
from ...streams.formatting import (
    GuestSample,
    error_json,
    error_line,
    guest_json,
    guest_line,
    node_json,
    node_line,
)
from ...streams.stats import HubClosedError, StatsError, StatsEvent, StatsHub, Watch
from ..problems import ApiError, bad_request
from ._common import app_context, context, require
from ._guest_lookup import guest_by_ref
from ._node_lookup import one_node

__all__ = ["STATS_HUB", "guest_stats", "node_stats", "setup_stats"]

STATS_HUB = web.AppKey("stats_hub", StatsHub)

_GUEST_PARAMS = ("stream", "format")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def setup_stats(app: web.Application) -> None:
    """A setup step for build_app: one StatsHub per API app, started and closed with it.
    Closed on shutdown (before aiohttp waits for handlers) so open streams end at once."""
    hub = StatsHub(app_context(app).clients)
    app[STATS_HUB] = hub

    async def start(_: web.Application) -> None:
        await hub.start()

    async def close(_: web.Application) -> None:
        await hub.close()

    app.on_startup.append(start)
    app.on_shutdown.append(close)


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise bad_request(f"{name} must be 0 or 1, not {value[:40]!r}", parameter=name)


def reject_unknown(request: web.Request, known: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(known))
    if unknown:
        raise bad_request(
            f"unknown query parameter {unknown[0]!r}; use {', '.join(known)}", parameter=unknown[0]
        )


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _hub(request: web.Request) -> StatsHub:
    hub = context(request).stats or request.app.get(STATS_HUB)
    if hub is None:
        raise ApiError(501, "Not Implemented", "statistics are not set up in this daemon")
    return hub


def _no_client(cluster: str) -> ApiError:
    return ApiError(503, "Service Unavailable", f"no Proxmox connection for cluster {cluster!r}")


async def guest_stats(request: web.Request) -> web.StreamResponse:
    require(request, "read")
    reject_unknown(request, _GUEST_PARAMS)
    stream = query_bool(request, "stream", True)
    fmt = request.query.get("format", "text")
    if fmt not in ("text", "json"):
        raise bad_request(f"format must be text or json, not {fmt[:40]!r}", parameter="format")
    ref = request.match_info["ref"]
    guest = guest_by_ref(context(request).inventory.snapshot, ref)
    hub = _hub(request)
    if not hub.has_client(guest.cluster):
        raise _no_client(guest.cluster)
    as_json = fmt == "json"

    def render(event: StatsEvent) -> str:
        if isinstance(event, StatsError):
            return (
                error_json(event.message, event.time, event.status)
                if as_json
                else (error_line(event.message))
            )
        assert isinstance(event.sample, GuestSample)
        return (
            guest_json(event.sample, event.rates, guest.ref)
            if as_json
            else (guest_line(event.sample))
        )

    watch = _open(lambda: hub.watch_guest(guest.cluster, guest.type, guest.node, guest.vmid))
    return await _serve(request, watch, render, stream, "application/x-ndjson" if as_json else None)


async def node_stats(request: web.Request) -> web.StreamResponse:
    require(request, "read")
    reject_unknown(request, ("stream", "format"))
    stream = query_bool(request, "stream", True)
    # NDJSON stays the default here (it was the only form before; clients parse it), unlike
    # guest stats; ?format=text gives the one-line form with the CPU model.
    fmt = request.query.get("format", "json")
    if fmt not in ("text", "json"):
        raise bad_request(f"format must be text or json, not {fmt[:40]!r}", parameter="format")
    node = one_node(request, request.match_info["node"])
    hub = _hub(request)
    if not hub.has_client(node.cluster):
        raise _no_client(node.cluster)
    as_json = fmt == "json"

    def render(event: StatsEvent) -> str:
        if isinstance(event, StatsError):
            return (
                error_json(event.message, event.time, event.status)
                if as_json
                else error_line(event.message)
            )
        assert not isinstance(event.sample, GuestSample)
        return node_json(event.sample) if as_json else node_line(event.sample)

    watch = _open(lambda: hub.watch_node(node.cluster, node.name))
    return await _serve(request, watch, render, stream, "application/x-ndjson" if as_json else None)


def _open(make: Callable[[], Watch]) -> Watch:
    try:
        return make()
    except HubClosedError:
        raise ApiError(503, "Service Unavailable", "the daemon is stopping") from None


async def _serve(
    request: web.Request,
    watch: Watch,
    render: Callable[[StatsEvent], str],
    stream: bool,
    content_type: str | None,
) -> web.StreamResponse:
    """Answer from `watch` in the transport the client asked for; always releases the watch."""
    async with watch:
        try:
            first = await watch.next()
        except HubClosedError:
            raise ApiError(503, "Service Unavailable", "the daemon is stopping") from None
        if isinstance(first, StatsError):
            raise ApiError(first.status, first.title, first.message)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, watch, render, first, stream)
        if "text/event-stream" in request.headers.get("Accept", ""):
            return await _http_stream(request, watch, render, first, stream, sse=True)
        if not stream:
            return web.Response(
                text=render(first) + "\n",
                content_type=content_type or "text/plain",
                charset="utf-8",
            )
        return await _http_stream(
            request, watch, render, first, stream, sse=False, content_type=content_type
        )


async def _http_stream(
    request: web.Request,
    watch: Watch,
    render: Callable[[StatsEvent], str],
    first: StatsEvent,
    stream: bool,
    *,
    sse: bool,
    content_type: str | None = None,
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
    )
    response.content_type = "text/event-stream" if sse else (content_type or "text/plain")
    response.charset = "utf-8"
    await response.prepare(request)
    event: StatsEvent = first
    # A vanished client shows as a failed write (once a second) or a closed transport.
    with contextlib.suppress(ConnectionError):
        try:
            while True:
                await response.write(_http_event(render, event, sse))
                if not stream or client_gone(request):
                    break
                event = await watch.next()
        except HubClosedError:
            # The daemon is stopping: say so as the last event, then end the body cleanly.
            await response.write(_http_event(render, _stopping_event(), sse, kind="end"))
        await response.write_eof()
    return response


def _stopping_event() -> StatsError:
    return StatsError(time.time(), STOPPING_MESSAGE, 503)


def _http_event(
    render: Callable[[StatsEvent], str], event: StatsEvent, sse: bool, kind: str | None = None
) -> bytes:
    text = render(event)
    if not sse:
        return (text + "\n").encode()
    kind = kind or ("error" if isinstance(event, StatsError) else "stats")
    return f"event: {kind}\ndata: {text}\n\n".encode()


async def _websocket(
    request: web.Request,
    watch: Watch,
    render: Callable[[StatsEvent], str],
    first: StatsEvent,
    stream: bool,
) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)

    stopping = False

    async def pump() -> None:
        nonlocal stopping
        event = first
        while True:
            await ws.send_str(render(event))
            if not stream:
                return
            try:
                event = await watch.next()
            except HubClosedError:
                stopping = True
                return

    async def drain() -> None:
        # Reading is how a close from the client is noticed; clients have nothing to say.
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                return

    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(pump()), loop.create_task(drain())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, HubClosedError):
                await task
        if stopping:
            # 1001 Going Away: the client may reconnect to the next instance.
            await ws.close(code=WSCloseCode.GOING_AWAY, message=STOPPING_MESSAGE.encode())
        else:
            await ws.close()
    return ws
