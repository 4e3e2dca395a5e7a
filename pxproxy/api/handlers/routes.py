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
    """Each configured route with its idle settings and the wake state of its guest."""
    require(request, "read")
    ctx = context(request)
    states = dict(ctx.wake.states()) if ctx.wake is not None else {}
    out = []
    for index, route in enumerate(ctx.config.routes):
        item: dict[str, Any] = (
            {"host": list(route.host)} if route.host else {"listen": route.listen}
        )
        item.update(
            guest=route.guest,
            port=route.port,
            scheme=route.scheme,
            path_prefix=route.path_prefix,
            idle=_idle(route.idle),
            state=str(states.get(index, WakeState.READY)),
        )
        out.append(item)
    return json_response(out)
