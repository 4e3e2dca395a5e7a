from __future__ import annotations

from typing import Any

from aiohttp import web

from ...config.models import IdleConfig
from ...wake.contract import WakeState
from ._common import context, json_response, require


def _idle(idle: IdleConfig | None) -> dict[str, Any] | None:
    if idle is None:
        return None
    return {
        "timeout_s": idle.timeout,
        "stop_method": idle.stop_method,
        "wake_timeout_s": idle.wake_timeout,
        "ready": {"http": idle.ready.http} if idle.ready.http else {"tcp": True},
        "depends_on": list(idle.depends_on),
        "shutdown_timeout_s": idle.shutdown_timeout,
        "retry_after_s": idle.retry_after,
    }


async def list_routes(request: web.Request) -> web.Response:
    """Each route (the config's, then those guests' notes declare) with its idle settings,
    its activity source and the wake state of its guest; then what guests' notes got wrong,
    as routes that are not served (`error`)."""
    require(request, "read")
    ctx = context(request)
    routes = ctx.routes.current
    out = []
    for entry in routes.routes:
        route = entry.config
        item: dict[str, Any] = (
            {"host": list(route.host)} if route.host else {"listen": route.listen}
        )
        gate = ctx.wake.gate_for(route) if ctx.wake is not None else None
        item.update(
            guest=route.guest,
            port=route.port,
            scheme=route.scheme,
            path_prefix=route.path_prefix,
            idle=_idle(route.idle),
            activity=ctx.activity_of(route),
            state=str(gate.state if gate is not None else WakeState.READY),
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
