"""`POST /api/v1/guests/{ref}/wake`: wake a guest through idle-watch, as a request to one of
its routes would, and stream each stage as NDJSON until it is ready or the wake failed.

Needs the `power` scope and the guest in the token's allowlist. The guest must have a route
with `idle:` (its waker is what wakes it: dependencies first, then start or resume, then the
readiness probe); without one the answer is 409. Lines: `{"state", "step", "elapsed_s"}` per
change, then a last line with state `ready` or `failed` (then with `error`, `retry_after_s`).
A client that leaves does not cancel the wake: other waiters share it. Audited as "wake".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from aiohttp import web

from ...inventory.model import Guest
from ...shutdown import STOPPING_MESSAGE, DaemonStopping
from ...wake.contract import Gate, WakeError, WakeProgress, WakeState
from ..audit import AuditRecord
from ..context import PRINCIPAL, ApiContext
from ..problems import ApiError, bad_request
from ._common import GuestDenied, audit_refusal, context, require, require_for_guest
from ._guest_lookup import audited_guest

__all__ = ["wake_guest"]

# Not stages of a wake: the outcome comes from ready(), and "asleep" is the state before it.
_UNSHOWN = (WakeState.READY, WakeState.FAILED, WakeState.ASLEEP)
# Retry-After while idle-watch is still starting (the daemon builds it after the API listens).
NOT_STARTED_RETRY_S = 2

Write = Callable[[dict[str, Any]], Awaitable[None]]


async def wake_guest(request: web.Request) -> web.StreamResponse:
    # The scope first, so a token that may never act learns nothing about which guests exist.
    require(request, "power", "wake")
    if request.query:
        message = f"unknown query parameter {next(iter(request.query))!r}; wake takes none"
        audit_refusal(request, "wake", f"rejected: {message}")
        raise bad_request(message)
    ctx = context(request)
    guest = audited_guest(request, "wake")
    started = time.monotonic()
    result = "failed: internal error"
    try:
        try:
            require_for_guest(request, "power", guest)
        except GuestDenied as exc:
            result = f"denied: {exc.reason}"
            raise
        gate = _gate_of(ctx, guest)
        already = gate.state is WakeState.READY
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson",
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)

        async def write(line: dict[str, Any]) -> None:
            line["elapsed_s"] = round(time.monotonic() - started, 3)
            await response.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")

        try:
            failure = await ctx.stopping.race(follow(gate, write))
        except DaemonStopping:
            failure = WakeError(guest.ref, STOPPING_MESSAGE, NOT_STARTED_RETRY_S)
        except ConnectionError:
            result = "client disconnected"
            return response
        with contextlib.suppress(ConnectionError):
            if failure is None:
                result = "already ready" if already else "ok"
                await write({"state": "ready", "step": "ready", "already_ready": already})
            else:
                result = f"failed: {failure.message}"
                await write(
                    {
                        "state": "failed",
                        "step": failure.message,
                        "error": failure.message,
                        "retry_after_s": round(failure.retry_after_s, 3),
                    }
                )
            await response.write_eof()
        return response
    except ApiError as exc:
        if not result.startswith("denied"):
            result = f"failed: {exc.detail}"
        raise
    finally:
        ctx.audit.write(
            AuditRecord(
                token=request[PRINCIPAL].name,
                action="wake",
                guest=guest.ref,
                detail={"id": guest.id, "node": guest.node},
                result=result,
                duration_s=round(time.monotonic() - started, 3),
            )
        )


def _gate_of(ctx: ApiContext, guest: Guest) -> Gate:
    """The waker of the guest's first idle route (routes to one guest share it)."""
    snapshot = ctx.inventory.snapshot
    idle_routes = [
        route
        for route in ctx.routes.current.configs
        if route.idle is not None
        and [g.ref for g in snapshot.lookup_ref(route.guest).guests] == [guest.ref]
    ]
    if not idle_routes:
        raise ApiError(
            409,
            "Conflict",
            f"guest {guest.ref} ({guest.name or guest.id}) has no route with idle: settings, "
            "so idle-watch does not wake it; use the start action instead",
        )
    if ctx.wake is None:
        raise ApiError(
            503,
            "Service Unavailable",
            "idle-watch does not run in this app; retry shortly",
            headers={"Retry-After": str(NOT_STARTED_RETRY_S)},
        )
    return ctx.wake.gate_for(idle_routes[0])


async def follow(gate: Gate, write: Write) -> WakeError | None:
    """Wake through the gate and write each stage until the wake ends; its outcome (None:
    ready) comes from the gate's own answer, not the last stage seen."""
    # Created first, so it begins the wake (state waking) before the stages are read.
    waiter = asyncio.create_task(gate.ready(), name="api-wake")
    steps = aiter(gate.progress())
    step: asyncio.Future[WakeProgress] | None = None
    last: WakeProgress | None = None
    try:
        while not waiter.done():
            step = asyncio.ensure_future(anext(steps))
            await asyncio.wait({step, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                break  # the answer came first
            try:
                item = step.result()
            except StopAsyncIteration:
                await asyncio.wait({waiter})  # ready or failed: the answer is due at once
                break
            finally:
                step = None
            if item.state not in _UNSHOWN and item != last:
                last = item
                await write({"state": item.state.value, "step": item.step})
        return await _outcome(waiter)
    finally:
        # A waiter that leaves does not cancel the wake itself (ready() shields it).
        for task in (step, waiter):
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in (step, waiter) if t is not None), return_exceptions=True)
        if isinstance(steps, AsyncGenerator):
            with contextlib.suppress(RuntimeError):
                await steps.aclose()


async def _outcome(waiter: asyncio.Task[None]) -> WakeError | None:
    try:
        await waiter
    except WakeError as exc:
        return exc
    return None
