"""1,000 concurrent idle WebSockets held through the proxy to one lab guest: all stay open
(each still echoes after the idle period) and the proxy's RSS is reported.

    python3 -m bench.bench_websockets
"""

from __future__ import annotations

import asyncio

import aiohttp

from ._stack import HOST, stack
from ._util import row, rss_bytes

SOCKETS = 1000
IDLE_S = 10


async def main() -> None:
    async with stack() as s:
        before = rss_bytes(s.pxproxy_pid)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            url = s.pxproxy + "/ws"
            sockets = []
            for batch in range(0, SOCKETS, 100):
                sockets += await asyncio.gather(
                    *(
                        session.ws_connect(url, headers={"Host": HOST}, heartbeat=None)
                        for _ in range(batch, min(batch + 100, SOCKETS))
                    )
                )
            await asyncio.sleep(IDLE_S)  # idle on purpose: nothing flows for a while
            held = rss_bytes(s.pxproxy_pid)

            async def echo(i: int, ws: aiohttp.ClientWebSocketResponse) -> bool:
                await ws.send_str(f"ping {i}")
                msg = await asyncio.wait_for(ws.receive(), 10)
                return bool(msg.data == f"ping {i}")

            alive = sum(await asyncio.gather(*(echo(i, ws) for i, ws in enumerate(sockets))))
            await asyncio.gather(*(ws.close() for ws in sockets))
    print(f"{SOCKETS} idle WebSockets through pxproxy for {IDLE_S}s")
    row("still open and echoing afterwards", f"{alive}/{SOCKETS}")
    row("proxy RSS before", f"{before / 2**20:.1f} MiB")
    row(f"proxy RSS with {SOCKETS} open", f"{held / 2**20:.1f} MiB")
    row("per WebSocket", f"{(held - before) / SOCKETS / 1024:.1f} KiB")


if __name__ == "__main__":
    asyncio.run(main())
