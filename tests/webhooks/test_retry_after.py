"""Review of issue 12: a Retry-After that str.isdigit() takes for digits but float() refuses
(superscripts: aiohttp decodes header bytes, so b"\\xc2\\xb2" arrives as "²") raises out of
the attempt: the delivery is lost without a retry, a failure count or a `webhook` event."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.webhooks.backoff import retry_after_s

from ..support import wait_for
from ..webhooks.support import hook, wake, webhooks


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b9", "\u2075"])
def test_a_retry_after_of_non_ascii_digits_is_unreadable_not_an_exception(value: str) -> None:
    assert retry_after_s(value, 0.0) is None


async def test_a_503_with_such_a_retry_after_is_counted_as_a_failure() -> None:
    # A raw endpoint (aiohttp's server would not send these bytes): 503, Retry-After: ².
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: \xc2\xb2\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with webhooks([hook("ops", f"http://127.0.0.1:{port}/x", retries=0)]) as (
            service,
            hub,
        ):
            hub.publish(wake("lab:7361", "waking", "starting"))
            # Before the fix the attempt raises: attempts stays 0, nothing is counted.
            await wait_for(lambda: service.describe()[0]["failed"] == 1, 5, "a counted failure")
            assert service.describe()[0]["attempts"] == 1
    finally:
        server.close()
        await server.wait_closed()
