"""A real HTTP endpoint on 127.0.0.1 that records what webhooks send it.

Each path behaves as its first segment says: /ok answers 204; /status/<n> answers n (with a
body that echoes the path, as some endpoints do); /script/<a>,<b>,... answers each status in
turn, then 204 (`429` comes with Retry-After: 7); /hang never answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    hanging: int = 0  # requests held by /hang right now
    _scripts: dict[str, int] = field(default_factory=dict)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Received(request.path, request.query_string, dict(request.headers), body)
        )
        parts = request.path.strip("/").split("/")
        if parts[0] == "ok":
            return web.Response(status=204)
        if parts[0] == "status":
            return web.Response(status=int(parts[1]), text=f"no hook at {request.path_qs}")
        if parts[0] == "script":
            statuses = [int(s) for s in parts[1].split(",")]
            seen = self._scripts.get(request.path, 0)
            self._scripts[request.path] = seen + 1
            if seen < len(statuses):
                status = statuses[seen]
                headers = {"Retry-After": "7"} if status == 429 else {}
                return web.Response(status=status, headers=headers, text="try later")
            return web.Response(status=204)
        if parts[0] == "hang":
            self.hanging += 1
            try:
                await self._release.wait()
            finally:
                self.hanging -= 1
            return web.Response(status=204)
        return web.Response(status=404)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.port = runner.addresses[0][1]
    try:
        yield recv
    finally:
        recv._release.set()
        await runner.cleanup()
