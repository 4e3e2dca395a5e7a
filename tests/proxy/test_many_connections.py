"""10,000 idle keep-alive client connections held by the proxy, each answered again after it
idled, with the proxy's memory per connection measured.

Two descriptors per connection on loopback (the client's and the proxy's) do not fit one
process's limit here, so the proxy runs in a process of its own (proxy_process.py), with its
soft RLIMIT_NOFILE raised to the hard limit, and the clients live in this one, raised too.
The clients run on uvloop as the proxy does: on asyncio's own loop, this side's Python would
take most of the time."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Iterator

import pytest
import uvloop

from ..support import wait_for
from .proxy_process import ProxyProcess, ok_guest, proxy_process
from .raw_client import RawClient

CONNECTIONS = 10_000
BATCH = 250  # connections opened (or asked again) at once
SPARE_FDS = 500  # this process's own files, the guest's side of the pool, pytest's
REQUEST = b"GET / HTTP/1.1\r\nHost: many.test\r\n\r\n"
# Loose: a connection costs the proxy a protocol object, a parser and a transport.
RSS_PER_CONNECTION_BOUND_KIB = 20


@pytest.fixture
def nofile() -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE raised to its hard limit, for the test's length."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else CONNECTIONS * 4
    if limit < CONNECTIONS + SPARE_FDS:
        pytest.fail(
            f"RLIMIT_NOFILE's hard limit is {hard}: {CONNECTIONS} connections need "
            f"{CONNECTIONS + SPARE_FDS} descriptors in each of two processes"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _ask(client: RawClient) -> int:
    await client.send(REQUEST)
    reply = await client.reply(timeout_s=30)
    assert reply.body == b"ok"
    return reply.status


async def _connect_and_ask(port: int) -> RawClient:
    client = await RawClient.connect(port)
    assert await _ask(client) == 200
    return client


def test_ten_thousand_idle_keep_alive_connections_are_held_and_answered_again(
    nofile: int,
) -> None:
    uvloop.run(_hold_ten_thousand(nofile))


async def _hold_ten_thousand(nofile: int) -> None:
    clients: list[RawClient] = []
    async with (
        ok_guest(backlog=1024) as guest_port,
        proxy_process(
            {"host": "many.test", "guest": "many", "port": guest_port}, nofile=nofile
        ) as px,
    ):
        await _connect_and_ask(px.port)  # warm: the code paths loaded, the pool filled
        await wait_for(lambda: _connections(px, 0), 10, "the warm-up connection to close")
        rss_before = px.rss_kib()
        try:
            while len(clients) < CONNECTIONS:
                n = min(BATCH, CONNECTIONS - len(clients))
                clients += await asyncio.gather(*(_connect_and_ask(px.port) for _ in range(n)))
            # Every client made one request and now idles on its kept-alive connection.
            await wait_for(lambda: _connections(px, CONNECTIONS), 10, "all held at once")
            rss_held = px.rss_kib()
            for i in range(0, CONNECTIONS, BATCH):
                statuses = await asyncio.gather(*(_ask(c) for c in clients[i : i + BATCH]))
                assert set(statuses) == {200}
            assert not any(c.eof for c in clients)
            assert (await px.stats())["connections"] == CONNECTIONS
            rss_after = px.rss_kib()
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        await wait_for(lambda: _connections(px, 0), 20, "every connection to be closed")
        assert px.alive
    per_connection = (rss_held - rss_before) / CONNECTIONS
    print(
        f"proxy RSS: {rss_before} KiB before, {rss_held} KiB with {CONNECTIONS} idle "
        f"connections ({per_connection:.2f} KiB each), {rss_after} KiB after the second round"
    )
    assert per_connection < RSS_PER_CONNECTION_BOUND_KIB


async def _connections(px: ProxyProcess, count: int) -> bool:
    return (await px.stats())["connections"] == count
