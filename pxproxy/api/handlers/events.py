"""`GET /api/v1/events`: pxproxy's live events as Server-Sent Events, one stream per page.

Scope `read`. First a `hello` ({"server_time", "clusters"}), then every event of the daemon's
EventHub as `event: <kind>` and `data: <JSON>`; a `: keep-alive` comment every 15 s while
nothing happens. An event about a guest (wake, idle) goes only to tokens whose guest allowlist
admits that guest. The stream ends cleanly when pxproxy stops (after a `: pxproxy is stopping`
comment) and when the reader fell too far behind (after an `overflow` event): the page
reconnects and fetches the state again. A reload that takes the token or its read scope away
ends its streams (after a comment saying so). Every reader shares the polls the daemon makes
anyway: open streams cost no Proxmox call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from aiohttp import web

from ...events.hub import Event, Subscription
from ...shutdown import STOPPING_MESSAGE, Stopping, cancel_and_wait
from ..auth import ANONYMOUS, Principal, has_scope
from ..context import PRINCIPAL, ApiContext
from ..principal import principal_of
from ..problems import ApiError, bad_request
from ._common import context, require

__all__ = ["KEEPALIVE", "KEEPALIVE_S", "events"]

KEEPALIVE_S = 15.0
# A shorter keep-alive for one app (tests): app[KEEPALIVE] = 0.05.
KEEPALIVE = web.AppKey("events_keepalive_s", float)
_KEEPALIVE_LINE = b": keep-alive\n\n"
_KEEPALIVE = Event("keep-alive", {})  # the marker of a quiet interval, never sent as is


async def events(request: web.Request) -> web.StreamResponse:
    require(request, "read")
    if request.query:
        raise bad_request(
            f"unknown query parameter {next(iter(request.query))!r}; events takes none"
        )
    ctx = context(request)
    principal = request[PRINCIPAL]
    keepalive_s = request.app.get(KEEPALIVE, KEEPALIVE_S)
    # Subscribed before the hello is sent: nothing published meanwhile is lost.
    sub = ctx.events.subscribe()
    stopper = asyncio.create_task(_close_when_stopping(ctx.stopping, sub), name="events-stop")
    try:
        response = web.StreamResponse(
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no buffering
        )
        response.content_type = "text/event-stream"
        response.charset = "utf-8"
        await response.prepare(request)
        hello = {"server_time": time.time(), "clusters": list(ctx.cluster_names)}
        # A vanished reader shows as a failed write (a keep-alive at the latest).
        with contextlib.suppress(ConnectionError):
            await response.write(_message("hello", json.dumps(hello, separators=(",", ":"))))
            revoked = await _pump(request, response, sub, ctx, principal, keepalive_s)
            if revoked is not None:
                await response.write(f": {revoked}\n\n".encode())
            elif not sub.dropped:
                await response.write(f": {STOPPING_MESSAGE}\n\n".encode())
            await response.write_eof()
        return response
    finally:
        sub.close()
        await cancel_and_wait(stopper)


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    sub: Subscription,
    ctx: ApiContext,
    principal: Principal,
    keepalive_s: float,
) -> str | None:
    """Send events until the subscription ends (pxproxy stops, or the reader overflowed), or
    a reload took the token or its read scope away: then why, and the stream ends."""
    while True:
        try:
            async with asyncio.timeout(keepalive_s):
                event = await sub.get()
        except TimeoutError:
            event = _KEEPALIVE
        if event is None:
            return None
        now = context(request)
        if now is not ctx:  # a reload swapped tokens and allowlists: judge the token anew
            ctx = now
            try:
                principal = principal_of(request, ctx.authority, ctx.loopback_listener)
            except ApiError as exc:
                return f"token refused after a reload: {exc.detail}"
            if not has_scope(principal, "read"):
                return f"token {principal.name!r} lost the 'read' scope in a reload"
        if event is _KEEPALIVE:
            await response.write(_KEEPALIVE_LINE)
        elif _admits(ctx, principal, event):
            await response.write(_LAST.encoded(event))


def _admits(ctx: ApiContext, principal: Principal, event: Event) -> bool:
    """Whether this reader may see the event: one about a guest needs the guest in the
    token's allowlist, judged against the inventory now. A guest not (or no longer) in the
    inventory goes to `*` tokens only. Anonymous (loopback, no tokens) reads everything, as
    it does through GET /api/v1/guests."""
    if event.guest is None or principal is ANONYMOUS or principal.allowlist.all:
        return True
    snapshot = ctx.inventory.snapshot
    found = snapshot.lookup_ref(event.guest).guests
    if len(found) != 1 or found[0].ref != event.guest:
        return False
    return principal.may_touch(found[0], snapshot, ctx.cluster_names).allowed


def _message(kind: str, data: str) -> bytes:
    return f"event: {kind}\ndata: {data}\n\n".encode()


class _LastMessage:
    """The SSE bytes of the last event sent: every stream sends the same events in the same
    order, so one slot spares all but the first of them the framing and encoding."""

    def __init__(self) -> None:
        self._event: Event | None = None
        self._bytes = b""

    def encoded(self, event: Event) -> bytes:
        if event is not self._event:
            self._event, self._bytes = event, _message(event.kind, event.json())
        return self._bytes


_LAST = _LastMessage()


async def _close_when_stopping(stopping: Stopping, sub: Subscription) -> None:
    await stopping.wait()
    sub.close()
