"""A client that writes exactly the bytes a test gives it and reads the proxy's responses with
a strict parser (httptools), one by one, on one connection. Not for HEAD requests: llhttp's
response parser cannot be told that a response has no body."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

import httptools

HOST = "127.0.0.1"
READ_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0  # a refusing proxy lingers up to 2 s for the client to read its answer


@dataclass(frozen=True, slots=True)
class RawReply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def value(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for n, v in self.headers if n.lower() == lower), None)


class NoReply(AssertionError):
    """The proxy closed the connection or went quiet before a whole response came."""


class _ResponseCollector:
    def __init__(self) -> None:
        self.done: deque[RawReply] = deque()
        self.partial = False
        self.parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()

    def on_message_begin(self) -> None:
        self.partial = True
        self._headers = []
        self._body.clear()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        if not self.partial:
            return
        self.partial = False
        status = self.parser.get_status_code()
        self.done.append(RawReply(status, tuple(self._headers), bytes(self._body)))


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._responses = _ResponseCollector()
        self.received = bytearray()  # everything the proxy sent on this connection
        self.eof = False
        self.switched = False  # the proxy answered 101: no more HTTP on this connection

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        # The proxy may refuse and close before taking it all: the reply says what happened.
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()

    async def reply(self, timeout_s: float = READ_TIMEOUT_S) -> RawReply:
        """The next whole response; NoReply when the connection ends or stays quiet first."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self._responses.done:
                    if self.eof:
                        raise NoReply(f"closed after {bytes(self.received)!r}")
                    await self._read()
        except TimeoutError:
            raise NoReply(f"no whole response in {timeout_s}s: {bytes(self.received)!r}") from None
        return self._responses.done.popleft()

    async def closed(self, timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Whether the proxy closes the connection within `timeout_s` (reading on meanwhile;
        whatever else arrives is parsed as more responses)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.eof:
                    await self._read()
        except TimeoutError:
            return False
        return True

    @property
    def pending(self) -> int:
        """Whole responses read but not yet taken by reply()."""
        return len(self._responses.done)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def _read(self) -> None:
        try:
            data = await self._reader.read(65536)
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
            return
        self.received += data
        if self.switched:
            return
        try:
            self._responses.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A 101: what follows is another protocol; the response is kept, parsing stops.
            self._responses.on_message_complete()
            self.switched = True
        except httptools.HttpParserError as exc:
            raise AssertionError(
                f"the proxy sent invalid HTTP ({exc}): {self.received!r}"
            ) from None


async def exchange(port: int, data: bytes, timeout_s: float = READ_TIMEOUT_S) -> RawReply:
    """Send `data` on a new connection and return the first response (the connection is
    closed afterwards)."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        return await client.reply(timeout_s)
    finally:
        await client.close()
