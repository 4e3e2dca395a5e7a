"""Many idle keep-alive client connections held open on a proxy: each sends one request, reads
its answer and then sends nothing; after the hold each sends a second request, which proves
the proxy kept it. The proxy's RSS is read before, while held, and after they closed."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from ._util import tree_rss_bytes

BATCH = 100  # connections opened at once (a listen backlog overflows with many more)
ANSWER_TIMEOUT_S = 30.0
SETTLE_S = 2.0  # after the clients close, for the proxy to see every FIN


@dataclass(frozen=True)
class HeldConnections:
    count: int
    opened: int  # answered their first request
    kept: int  # answered their second request after the hold
    rss_before: int
    rss_held: int
    rss_after: int  # SETTLE_S after all closed
    open_s: float  # to open all and get every first answer

    @property
    def per_connection(self) -> float:
        return (self.rss_held - self.rss_before) / max(self.opened, 1)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bool:
    """One request and its whole answer (Content-Length framed); True on a 200 that keeps the
    connection open."""
    writer.write(request)
    async with asyncio.timeout(ANSWER_TIMEOUT_S):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        fields = dict(line.partition(":")[::2] for line in head.split("\r\n")[1:] if line)
        if fields.get("transfer-encoding", "").strip() == "chunked":
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")  # no trailers are sent here
        else:
            await reader.readexactly(int(fields.get("content-length", "0")))
    return head.startswith("http/1.1 200") and "connection: close" not in head


async def _open(
    ip: str, port: int, request: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        reader, writer = await asyncio.open_connection(ip, port)
        if await _exchange(reader, writer, request):
            return reader, writer
        writer.close()
    return None


async def _again(pair: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> bool:
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return await _exchange(*pair, request)
    return False


async def hold_connections(
    ip: str, port: int, host: str, pid: int, count: int, hold_s: float
) -> HeldConnections:
    """`count` keep-alive connections to `ip`:`port` (Host `host`) held idle for `hold_s`; RSS
    is that of `pid` and its descendants. The caller raises RLIMIT_NOFILE first."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    before = tree_rss_bytes(pid)
    loop = asyncio.get_running_loop()
    started = loop.time()
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for first in range(0, count, BATCH):
            batch = [_open(ip, port, request) for _ in range(first, min(first + BATCH, count))]
            held += [pair for pair in await asyncio.gather(*batch) if pair is not None]
        open_s = loop.time() - started
        await asyncio.sleep(hold_s)  # idle on purpose: nothing flows while held
        rss_held = tree_rss_bytes(pid)
        kept = 0
        for first in range(0, len(held), BATCH):
            again = [_again(pair, request) for pair in held[first : first + BATCH]]
            kept += sum(await asyncio.gather(*again))
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(SETTLE_S)
    return HeldConnections(count, len(held), kept, before, rss_held, tree_rss_bytes(pid), open_s)
