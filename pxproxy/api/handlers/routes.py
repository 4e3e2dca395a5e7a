from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ...config.models import BeforeStop, IdleConfig
from ...routing.route_set import route_name
from ...wake.contract import Gate, WakeState
from ...wake.waker import Waker
from ._common import context, json_response, require


def _idle(idle: IdleConfig | None, protocol: str = "tcp") -> dict[str, Any] | None:
    if idle is None:
        return None
    return {
        "timeout_s": idle.timeout,
        "stop_method": idle.stop_method,
        "wake_timeout_s": idle.wake_timeout,
        # Without ready.http: a TCP connect, or for a UDP route a datagram not refused.
        "ready": {"http": idle.ready.http} if idle.ready.http else {protocol: True},
        "depends_on": list(idle.depends_on),
        "shutdown_timeout_s": idle.shutdown_timeout,
        "retry_after_s": idle.retry_after,
        "before_stop": _before_stop(idle.before_stop),
    }


def _before_stop(settings: BeforeStop | None) -> dict[str, Any] | None:
    if settings is None:
        return None
    return {
        "exec": list(settings.exec),
        "grace_s": settings.grace,
        "timeout_s": settings.timeout,
    }


def _stopping(gate: Gate | None) -> dict[str, object] | None:
    """The before_stop under way on the route's guest, while it is ready: its command, or
    the grace left (`{"step": "grace", "stopping_in_s": 42.0}`)."""
    progress = gate.before_stop if isinstance(gate, Waker) else None
    return progress.to_json() if progress is not None else None


def _idle_clock(gate: Gate | None, now: float) -> dict[str, object]:
    """When the route's guest was last used, and the seconds until idle-watch stops it (None:
    not counting down: asleep, waking, held by an open connection or an awake dependent,
    or in its before_stop, which `stopping` shows); the error of a failed wake."""
    if not isinstance(gate, Waker):
        return {
            "last_activity_at": None,
            "idle_stop_in_s": None,
            "busy": False,
            "wake_error": None,
        }
    last = gate.last_activity_at()
    busy = gate.held or any(d.awake for d in gate.dependents)
    stop_in: float | None = None
    counting = gate.state is WakeState.READY and not busy and gate.before_stop is None
    if gate.idle is not None and counting:
        stop_in = round(max(0.0, gate.idle.timeout - (now - last)), 1)
    # The last failure's message while the state is failed.
    error = gate.error if gate.state is WakeState.FAILED else None
    return {
        "last_activity_at": round(last, 3),
        "idle_stop_in_s": stop_in,
        "busy": busy,
        "wake_error": error,
    }


async def list_routes(request: web.Request) -> web.Response:
    """Each route (the config's, then those guests' notes declare) with its idle settings,
    its activity source and the wake state of its guest; then what guests' notes got wrong,
    as routes that are not served (`error`)."""
    require(request, "read")
    ctx = context(request)
    routes = ctx.routes.current
    now = time.time()
    out = []
    for entry in routes.routes:
        route = entry.config
        item: dict[str, Any] = (
            {"host": list(route.host)}
            if route.host
            else {"listen": route.listen, "protocol": route.protocol}
        )
        gate = ctx.wake.gate_for(route) if ctx.wake is not None else None
        item.update(
            name=route_name(route),
            guest=route.guest,
            port=route.port,
            scheme=route.scheme,
            path_prefix=route.path_prefix,
            idle=_idle(route.idle, "tcp" if route.host else route.protocol),
            activity=ctx.activity_of(route),
            state=str(gate.state if gate is not None else WakeState.READY),
            # While ready: the before_stop under way (its command, or the grace left).
            stopping=_stopping(gate),
            **_idle_clock(gate, now),
            origin=entry.origin,
        )
        if entry.owner is not None:
            item["declared_by"] = entry.owner
        out.append(item)
    for problem in routes.problems:
        out.append(
            {
                "origin": "notes",
                "declared_by": problem.guest,
                "guest": problem.guest,
                "guest_name": problem.name,
                "error": problem.error,
            }
        )
    return json_response(out)
