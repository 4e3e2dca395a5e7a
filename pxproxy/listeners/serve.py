"""A listening socket whose connections pass the head guard before aiohttp's protocol.

Used instead of web.TCPSite: the daemon owns the asyncio.Server (its port, its closing), and
each connection's aiohttp protocol is made from the runner's public web.Server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .head_guard import HeadLimits, ListenerGuard
from .quiet_handler import QuietRequestHandler

BACKLOG = 128  # as web.TCPSite's


class GuardedListener:
    def __init__(self, server: asyncio.Server, guard: ListenerGuard) -> None:
        self.server = server
        self.guard = guard

    @property
    def port(self) -> int | None:
        sockets = self.server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else None

    def close(self) -> None:
        """Stop accepting; open connections are the runner's to close (runner.cleanup())."""
        self.server.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


async def listen(
    runner: web.BaseRunner,
    host: str,
    port: int,
    *,
    name: str,
    limits: HeadLimits,
    handler: Mapping[str, Any],
) -> GuardedListener:
    """Listen on host:port for a set-up runner. `handler`: the settings of each connection's
    aiohttp RequestHandler (keepalive_timeout, max_line_size, ...)."""
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() before listen()")
    loop = asyncio.get_running_loop()
    guard = ListenerGuard(name, limits)
    settings = dict(handler)

    def make_inner() -> asyncio.Protocol:
        return QuietRequestHandler(server, loop=loop, reject_log=guard.reject_log, **settings)

    aserver = await loop.create_server(
        lambda: guard.protocol(make_inner),
        host or None,
        port,
        reuse_address=True,
        backlog=BACKLOG,
    )
    return GuardedListener(aserver, guard)
