"""EMFILE survived: a proxy at its file-descriptor limit pauses accepting, says so once, and
accepts again (saying so once) when descriptors come free. The proxy runs in a process of its
own (proxy_process.py), with a soft RLIMIT_NOFILE of 64."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import pytest

from ..support import wait_for
from .proxy_process import ProxyProcess, ok_guest, proxy_process
from .raw_client import RawClient

NOFILE = 64
# Connections beyond the limit, left in the kernel's accept queue. Few: when the clients go,
# these are accepted as descriptors come free, and more than come free at once could meet
# the limit a second time.
QUEUED = 3
OUT_OF_FDS = "out of file descriptors"
AGAIN = "accepting connections again"
REQUEST = b"GET / HTTP/1.1\r\nHost: emfile.test\r\n\r\n"


@pytest.fixture
async def guest_port() -> AsyncIterator[int]:
    async with ok_guest() as port:
        yield port


@contextlib.asynccontextmanager
async def _limited_proxy(guest_port: int) -> AsyncIterator[ProxyProcess]:
    route = {"host": "emfile.test", "guest": "emfile", "port": guest_port}
    # Idle clients are held for the test's length, not closed by the header timeout.
    async with proxy_process(route, nofile=NOFILE, header_timeout="60s") as px:
        yield px


async def _served(px: ProxyProcess) -> bool:
    client = await RawClient.connect(px.port)
    try:
        await client.send(REQUEST)
        return (await client.reply()).body == b"ok"
    finally:
        await client.close()


async def _fill(px: ProxyProcess) -> list[RawClient]:
    """Idle client connections, one at a time, each until the proxy accepted it, until one
    meets the limit instead."""
    clients: list[RawClient] = []
    for _ in range(NOFILE):
        before = (await px.stats())["accepted"]
        clients.append(await RawClient.connect(px.port))
        await wait_for(
            functools.partial(_accepted_or_starved, px, before),
            5,
            "the proxy to take the connection or meet its limit",
        )
        if (await px.stats())["starvations"]:
            return clients
    pytest.fail(f"{NOFILE} connections did not reach the limit of {NOFILE} descriptors")


async def test_emfile_pauses_accepting_logs_once_and_resumes(guest_port: int) -> None:
    async with _limited_proxy(guest_port) as px:
        assert await _served(px)  # one pooled guest connection from now on
        clients = await _fill(px)
        clients += [await RawClient.connect(px.port) for _ in range(QUEUED - 1)]
        try:
            # Accepting retries every 0.25 s and keeps meeting the limit: one warning only.
            first = (await px.stats())["starvations"]
            await wait_for(
                lambda: _starved_more(px, first + 3), 10, "accepting to be retried thrice"
            )
            assert px.alive
            assert px.logged(OUT_OF_FDS) == 1
            assert px.logged(AGAIN) == 0
        finally:
            for client in clients:
                await client.close()
        await wait_for(lambda: px.logged(AGAIN) > 0, 10, f"{AGAIN!r} in the log")
        for _ in range(10):
            assert await _served(px)
        await wait_for(
            lambda: _connections(px, 0), 10, "the queued connections to be accepted and closed"
        )
        assert px.alive
        assert px.logged(OUT_OF_FDS) == 1
        assert px.logged(AGAIN) == 1
        assert not [line for line in px.log if "Traceback" in line or "ERROR" in line]


async def _accepted_or_starved(px: ProxyProcess, accepted_before: int) -> bool:
    stats = await px.stats()
    return stats["accepted"] > accepted_before or stats["starvations"] > 0


async def _starved_more(px: ProxyProcess, at_least: int) -> bool:
    return (await px.stats())["starvations"] >= at_least


async def _connections(px: ProxyProcess, count: int) -> bool:
    return (await px.stats())["connections"] == count


CHURN = 10  # held connections closed one by one while more wait in the accept queue


async def test_emfile_under_churn_is_one_episode_logged_once(guest_port: int) -> None:
    async with _limited_proxy(guest_port) as px:
        clients = await _fill(px)
        waiting = [await RawClient.connect(px.port) for _ in range(CHURN)]
        try:
            # Each freed descriptor lets one waiting connection in, and the next meets the
            # limit again: one episode of pressure, which the log tells once, not per freed
            # descriptor (a daemon at its limit would log a pair of lines every 0.25 s).
            for held in clients[:CHURN]:
                before = await px.stats()
                await held.close()
                await wait_for(
                    functools.partial(_accepted_and_starved, px, before),
                    5,
                    "one waiting connection to be taken, and the limit met again",
                )
            assert px.alive
            assert (px.logged(OUT_OF_FDS), px.logged(AGAIN)) == (1, 0)
        finally:
            for client in clients + waiting:
                await client.close()
        await wait_for(lambda: px.logged(AGAIN) > 0, 10, f"{AGAIN!r} in the log")
        assert await _served(px)
        assert (px.logged(OUT_OF_FDS), px.logged(AGAIN)) == (1, 1)


async def _accepted_and_starved(px: ProxyProcess, before: dict[str, int]) -> bool:
    stats = await px.stats()
    return stats["accepted"] > before["accepted"] and stats["starvations"] > before["starvations"]
