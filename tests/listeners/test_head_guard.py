"""The head guard in front of a real aiohttp server: limits on head size, header count, time to
send a head and connections per client address, with bodies, keep-alive, pipelining and
upgrades left working."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from pxproxy.listeners.head_guard import HeadLimits
from pxproxy.listeners.serve import GuardedListener, listen

from ..support import HOST, wait_for

LIMITS = HeadLimits(max_head_bytes=4096, max_headers=20, header_timeout_s=0.4)


@dataclass
class Running:
    listener: GuardedListener
    port: int
    handled: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def guarded(limits: HeadLimits = LIMITS, keepalive_s: float = 30.0) -> AsyncIterator[Running]:
    handled: list[str] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        handled.append(request.path)
        if request.path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str(msg.data)
            return ws
        body = await request.read()
        return web.Response(text=f"{request.path} {len(body)}")

    server = web.Server(handler)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    listener = await listen(
        runner,
        HOST,
        0,
        name="test",
        limits=limits,
        handler={"keepalive_timeout": keepalive_s, "access_log": None},
    )
    try:
        assert listener.port is not None
        yield Running(listener, listener.port, handled)
    finally:
        listener.close()
        await runner.cleanup()


async def exchange(port: int, data: bytes, source: str = HOST) -> bytes:
    """Send `data`, read until the server closes (bounded)."""
    reader, writer = await asyncio.open_connection(HOST, port, local_addr=(source, 0))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def head(*lines: bytes, path: bytes = b"/") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(line + b"\r\n" for line in lines)


async def test_a_head_within_the_limits_is_served() -> None:
    async with guarded() as run:
        answer = await exchange(run.port, head(b"X-A: 1", b"Connection: close") + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert run.handled == ["/"]


async def test_a_head_over_the_total_size_gets_431_and_never_reaches_the_handler() -> None:
    # Every line is well under aiohttp's 8190-byte line limit; together they are not.
    lines = [b"X-Pad-%d: " % i + b"a" * 1000 for i in range(8)]
    async with guarded() as run:
        answer = await exchange(run.port, head(*lines) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert b"\r\nServer: pxproxy\r\n" in answer
    assert b"over 4096 bytes" in answer
    assert run.handled == []


async def test_too_many_headers_get_431() -> None:
    async with guarded() as run:
        answer = await exchange(run.port, head(*(b"X-%d: 1" % i for i in range(21))) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"more than 20 header lines" in answer
    assert run.handled == []


async def test_twenty_headers_are_fine() -> None:
    lines = [b"X-%d: 1" % i for i in range(18)] + [b"Connection: close"]
    async with guarded() as run:
        answer = await exchange(run.port, head(*lines) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200")


async def test_bodies_are_not_counted() -> None:
    body = b"b" * 200_000
    request = (
        b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body)
    ) + body
    async with guarded() as run:
        answer = await exchange(run.port, request)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"/up 200000")


async def test_each_request_of_a_connection_is_counted_on_its_own() -> None:
    # Three pipelined requests of 3,000 head bytes each: 9,000 in all, each under 4,096.
    pad = b"X-Pad: " + b"a" * 3000
    requests = head(pad, path=b"/1") + b"\r\n" + head(pad, path=b"/2") + b"\r\n"
    requests += head(pad, b"Connection: close", path=b"/3") + b"\r\n"
    async with guarded() as run:
        answer = await exchange(run.port, requests)
    assert answer.count(b"HTTP/1.1 200") == 3
    assert run.handled == ["/1", "/2", "/3"]


async def test_a_later_oversized_request_on_a_kept_alive_connection_gets_431() -> None:
    async with guarded() as run:
        reader, writer = await asyncio.open_connection(HOST, run.port)
        try:
            writer.write(head(path=b"/first") + b"\r\n")
            async with asyncio.timeout(5):
                first = await reader.readuntil(b"/first 0")
            writer.write(head(*(b"X-%d: 1" % i for i in range(30))) + b"\r\n")
            async with asyncio.timeout(5):
                second = await reader.read()
        finally:
            writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 431")
    assert run.handled == ["/first"]


async def test_a_slow_head_is_closed_at_the_header_timeout() -> None:
    async with guarded() as run:
        reader, writer = await asyncio.open_connection(HOST, run.port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            async with asyncio.timeout(5):
                while True:
                    data = await reader.read(100)
                    if not data:
                        break
                    writer.write(b"a")  # a byte now and then does not extend the time
        finally:
            writer.close()
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0
    assert run.handled == []


async def test_300_slowloris_connections_are_all_closed_at_the_header_timeout() -> None:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    async with guarded() as run:
        for _ in range(300):
            reader, writer = await asyncio.open_connection(HOST, run.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            opened.append((reader, writer))
        started = time.monotonic()

        async def closed(reader: asyncio.StreamReader) -> bool:
            with contextlib.suppress(ConnectionError):
                while await reader.read(100):
                    pass
            return True

        async with asyncio.timeout(5):
            results = await asyncio.gather(*(closed(r) for r, _ in opened))
        elapsed = time.monotonic() - started
        for _, writer in opened:
            writer.close()
    assert results == [True] * 300
    assert elapsed < 3.0


async def test_a_kept_alive_idle_connection_is_not_cut_by_the_header_timeout() -> None:
    async with guarded() as run:
        reader, writer = await asyncio.open_connection(HOST, run.port)
        try:
            writer.write(head(path=b"/a") + b"\r\n")
            async with asyncio.timeout(5):
                await reader.readuntil(b"/a 0")
            # Idle between requests: aiohttp's keep-alive timer governs; no head timer runs
            # that the header timeout could close the connection with.
            guard = run.listener.guard
            await wait_for(lambda: len(guard.connections) == 1, 5, "the connection")
            assert guard.head_timers() == 0
            writer.write(head(b"Connection: close", path=b"/b") + b"\r\n")
            async with asyncio.timeout(5):
                answer = await reader.read()
        finally:
            writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert run.handled == ["/a", "/b"]


async def test_malformed_heads_get_a_400_that_quotes_nothing() -> None:
    secret = b"guard-secret-0123456789"
    async with guarded() as run:
        answer = await exchange(
            run.port, head(b"Authorization: Bearer " + secret + b"\x01") + b"\r\n"
        )
    assert answer.startswith(b"HTTP/1.1 400")
    assert secret not in answer
    assert run.handled == []


async def test_connections_per_client_address_are_limited() -> None:
    limits = HeadLimits(4096, 20, 5.0, max_connections_per_client=2)
    async with guarded(limits) as run:
        held = [await asyncio.open_connection(HOST, run.port) for _ in range(2)]
        await wait_for(
            lambda: run.listener.guard.slots.open_connections(HOST) == 2, 5, "two connections"
        )
        refused = await exchange(run.port, head() + b"\r\n")
        other = await exchange(run.port, head(b"Connection: close") + b"\r\n", "127.0.0.2")
        held[0][1].close()
        await wait_for(
            lambda: run.listener.guard.slots.open_connections(HOST) == 1, 5, "one closed"
        )
        again = await exchange(run.port, head(b"Connection: close") + b"\r\n")
        for _, writer in held[1:]:
            writer.close()
    assert refused.startswith(b"HTTP/1.1 503")
    assert b"\r\nConnection: close\r\n" in refused
    assert other.startswith(b"HTTP/1.1 200")  # another address has its own count
    assert again.startswith(b"HTTP/1.1 200")


async def test_a_websocket_passes_and_is_not_cut_by_the_header_timeout() -> None:
    async with (
        guarded() as run,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://{HOST}:{run.port}/ws") as ws,
    ):
        await ws.send_str("x" * 10_000)  # frames are not a head: no size limit
        assert (await ws.receive()).data == "x" * 10_000
        # An upgraded connection has no head timer: the header timeout cannot cut it.
        assert len(run.listener.guard.connections) == 1
        assert run.listener.guard.head_timers() == 0
        await ws.send_str("still here")
        assert (await ws.receive()).data == "still here"


@pytest.mark.parametrize("upgrade", [b"websocket", b"h2c"])
async def test_a_declined_upgrade_does_not_end_the_guarding(upgrade: bytes) -> None:
    # The handler answers the Upgrade request like any other; aiohttp then parses what
    # follows as HTTP, so the guard must keep counting.
    declined = head(b"Connection: Upgrade", b"Upgrade: " + upgrade, path=b"/plain") + b"\r\n"
    oversized = head(*(b"X-%d: 1" % i for i in range(30))) + b"\r\n"
    async with guarded() as run:
        reader, writer = await asyncio.open_connection(HOST, run.port)
        try:
            writer.write(declined)
            async with asyncio.timeout(5):
                first = await reader.readuntil(b"/plain 0")
            writer.write(oversized)
            async with asyncio.timeout(5):
                second = await reader.read()
        finally:
            writer.close()
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 431")
    assert run.handled == ["/plain"]


async def test_an_upgrade_aiohttp_never_switches_to_cannot_turn_the_guard_off() -> None:
    # An h2c upgrade then a byte that is no HTTP: taken for "the upgrade was accepted", this
    # once stopped the guarding of the connection, and a huge head went through.
    trick = head(b"Connection: upgrade", b"Upgrade: h2c", path=b"/plain") + b"\r\n\x00"
    oversized = head(*(b"X-%d: %s" % (i, b"a" * 1000) for i in range(30)), path=b"/big")
    async with guarded() as run:
        answer = await exchange(run.port, trick + oversized + b"\r\n")
    # What follows a non-switching upgrade must be HTTP: the stray byte is refused at once.
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert "/big" not in run.handled
