"""1,000 concurrent idle WebSockets held through the proxy to one lab guest: all stay open
(each still echoes after the idle period) and the proxy's RSS is reported. bench_proxy holds
them through nginx too, with `hold_websockets`.

    python3 -m bench.bench_websockets
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp

from ._stack import HOST, stack
from ._util import row, tree_rss_bytes

SOCKETS = 1000
IDLE_S = 10


@dataclass(frozen=True)
class HeldWebSockets:
    count: int
    alive: int  # still echoing after the idle period
    rss_before: int
    rss_held: int

    @property
    def per_socket(self) -> float:
        return (self.rss_held - self.rss_before) / self.count


async def hold_websockets(
    url: str, host: str, pid: int, count: int = SOCKETS, idle_s: float = IDLE_S
) -> HeldWebSockets:
    """`count` WebSockets to `url` (the lab guest's /ws echo) with Host `host`, idle for
    `idle_s`, then each echoes once; RSS is that of `pid` and its descendants (nginx's
    workers)."""
    before = tree_rss_bytes(pid)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for batch in range(0, count, 100):
            sockets += await asyncio.gather(
                *(
                    session.ws_connect(url, headers={"Host": host}, heartbeat=None)
                    for _ in range(batch, min(batch + 100, count))
                )
            )
        await asyncio.sleep(idle_s)  # idle on purpose: nothing flows for a while
        held = tree_rss_bytes(pid)

        async def echo(i: int, ws: aiohttp.ClientWebSocketResponse) -> bool:
            await ws.send_str(f"ping {i}")
            msg = await asyncio.wait_for(ws.receive(), 10)
            return bool(msg.data == f"ping {i}")

        alive = sum(await asyncio.gather(*(echo(i, ws) for i, ws in enumerate(sockets))))
        await asyncio.gather(*(ws.close() for ws in sockets))
    return HeldWebSockets(count, alive, before, held)


async def main() -> None:
    async with stack() as s:
        held = await hold_websockets(s.pxproxy + "/ws", HOST, s.pxproxy_pid)
    print(f"{SOCKETS} idle WebSockets through pxproxy for {IDLE_S}s")
    row("still open and echoing afterwards", f"{held.alive}/{SOCKETS}")
    row("proxy RSS before", f"{held.rss_before / 2**20:.1f} MiB")
    row(f"proxy RSS with {SOCKETS} open", f"{held.rss_held / 2**20:.1f} MiB")
    row("per WebSocket", f"{held.per_socket / 1024:.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
