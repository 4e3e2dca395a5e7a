"""When pxproxy stops, a WebSocket tunnel tells each side 1001 Going Away between frames,
never inside one: a large binary message in flight when stopping starts is passed whole, and
the close frame follows it. Raw bytes on both sides, so that exactly what each receives is
known."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pxproxy.proxy.tunnel import GOING_AWAY_S
from pxproxy.shutdown import STOPPING_MESSAGE, Stopping

from ..support import wait_for
from .conftest import HOST, RunningProxy, StartProxy, routes, snapshot_guest

GOING_AWAY = 1001
IN_FLIGHT_BYTES = 1 << 20  # a 64-bit length frame, passed in pieces
CLIENT_FRAME_BYTES = 40_000  # a 16-bit length frame
FIRST_PART = 300 * 1024
END_TIMEOUT_S = GOING_AWAY_S + 5


def ws_frame(payload: bytes, *, opcode: int = 0x2, mask: bytes | None = None) -> bytes:
    """One final frame (RFC 6455 §5.2); masked when `mask` is given, as clients send."""
    n = len(payload)
    masked = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((0x80 | opcode, masked | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, masked | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, masked | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_close(data: bytes) -> tuple[int, str]:
    """(code, reason) of the close frame that is all of `data`, masked or not."""
    assert data[0] == 0x88, data[:16]
    length = data[1] & 0x7F
    assert length < 126
    if data[1] & 0x80:
        mask, payload = data[2:6], data[6 : 6 + length]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(data) == 6 + length, data
    else:
        payload = data[2 : 2 + length]
        assert len(data) == 2 + length, data
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


def has_close(data: bytes | bytearray, at: int = 0) -> bool:
    """Whether a whole close frame's header and payload are in `data` from `at`."""
    if len(data) < at + 2:
        return False
    mask = 4 if data[at + 1] & 0x80 else 0
    return len(data) >= at + 2 + mask + (data[at + 1] & 0x7F)


@dataclass
class _Guest:
    """The guest's side of one tunnel: what it received after its 101, and its writer."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: bytearray


@pytest.fixture
async def ws_guest() -> AsyncIterator[tuple[int, asyncio.Queue[_Guest]]]:
    """A guest that answers a WebSocket handshake with a 101 and leaves the rest to the test."""
    sides: asyncio.Queue[_Guest] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: unchecked\r\n\r\n"
        )
        side = _Guest(reader, writer, bytearray())
        await sides.put(side)
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                side.received += data
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    try:
        yield server.sockets[0].getsockname()[1], sides
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def _read_until_eof(reader: asyncio.StreamReader, into: bytearray) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            into += data


async def _tunnel(
    px: RunningProxy, sides: asyncio.Queue[_Guest]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Guest]:
    reader, writer = await asyncio.open_connection(HOST, int(px.url.rsplit(":", 1)[1]))
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %b\r\n\r\n" % key
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101 "), head
    guest = await asyncio.wait_for(sides.get(), 5)
    await wait_for(lambda: len(px.proxy.tunnels) == 1, 5, "the tunnel")
    return reader, writer, guest


async def test_going_away_waits_for_the_frames_in_flight_to_end(
    start_proxy: StartProxy, ws_guest: tuple[int, asyncio.Queue[_Guest]]
) -> None:
    port, sides = ws_guest
    stopping = Stopping()
    px = await start_proxy(
        routes({"host": "ws.test", "guest": "ws", "port": port}),
        [snapshot_guest(7211, "ws", (HOST,))],
        stopping=stopping,
    )
    reader, writer, guest = await _tunnel(px, sides)
    rng = random.Random(7211)
    to_client = ws_frame(rng.randbytes(IN_FLIGHT_BYTES))
    to_guest = ws_frame(rng.randbytes(CLIENT_FRAME_BYTES), mask=rng.randbytes(4))
    client_got = bytearray()
    # Guest to client: a large frame, its first part through the proxy. Client to guest: the
    # first byte of a frame's header only, so the proxy is inside a header on that side.
    guest.writer.write(to_client[:FIRST_PART])
    writer.write(to_guest[:1])
    while len(client_got) < FIRST_PART:
        client_got += await asyncio.wait_for(reader.read(65536), 5)
    await wait_for(lambda: len(guest.received) == 1, 5, "the first byte to reach the guest")

    stopping.set()
    (tunnel,) = px.proxy.tunnels
    await wait_for(lambda: tunnel._going_away is not None, 5, "the tunnel to hear of the stop")
    # Both sides are inside a frame: nothing may be said until each frame has ended.
    guest.writer.write(to_client[FIRST_PART:])
    writer.write(to_guest[1:])
    await asyncio.wait_for(_read_until_eof(reader, client_got), END_TIMEOUT_S)
    writer.close()

    assert bytes(client_got[: len(to_client)]) == to_client
    assert read_close(bytes(client_got[len(to_client) :])) == (GOING_AWAY, STOPPING_MESSAGE)
    await wait_for(
        lambda: has_close(guest.received, len(to_guest)), END_TIMEOUT_S, "the guest's close"
    )
    assert bytes(guest.received[: len(to_guest)]) == to_guest
    assert read_close(bytes(guest.received[len(to_guest) :])) == (GOING_AWAY, STOPPING_MESSAGE)
    await wait_for(lambda: not px.proxy.tunnels, END_TIMEOUT_S, "the tunnel to end")
    assert px.metrics.open.get("ws.test") == 0


async def test_going_away_goes_out_at_once_between_frames(
    start_proxy: StartProxy, ws_guest: tuple[int, asyncio.Queue[_Guest]]
) -> None:
    port, sides = ws_guest
    stopping = Stopping()
    px = await start_proxy(
        routes({"host": "ws.test", "guest": "ws", "port": port}),
        [snapshot_guest(7212, "ws", (HOST,))],
        stopping=stopping,
    )
    reader, writer, guest = await _tunnel(px, sides)
    whole = ws_frame(b"x" * 70_000)
    guest.writer.write(whole)  # a whole frame: the stream is between frames after it
    got = bytearray()
    while len(got) < len(whole):
        got += await asyncio.wait_for(reader.read(65536), 5)
    stopping.set()
    # The close frames come without any more bytes from either side.
    while not has_close(got, len(whole)):
        got += await asyncio.wait_for(reader.read(65536), 5)
    assert bytes(got[: len(whole)]) == whole
    assert read_close(bytes(got[len(whole) :])) == (GOING_AWAY, STOPPING_MESSAGE)
    await wait_for(lambda: has_close(guest.received), 5, "the guest's close frame")
    assert read_close(bytes(guest.received)) == (GOING_AWAY, STOPPING_MESSAGE)
    writer.close()
