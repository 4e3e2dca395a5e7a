"""The thin reader of Traefik's /metrics endpoint (an HTTP GET; not a Proxmox call)."""

from __future__ import annotations

from typing import Protocol

import aiohttp

# Traefik's answer for a few hundred services is a few MiB; past this something is wrong.
MAX_METRICS_BYTES = 32 * 1024 * 1024
FETCH_TIMEOUT_S = 5.0


class MetricsUnavailable(Exception):
    """The metrics could not be read; the message says why (for the log and the API)."""


class MetricsFetch(Protocol):
    async def __call__(self, url: str) -> str:
        """The body of `url`; raises MetricsUnavailable."""


class HttpMetricsFetch:
    """One aiohttp session, opened on first use; `close()` on shutdown."""

    def __init__(self, timeout_s: float = FETCH_TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> str:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise MetricsUnavailable(f"{url} answered HTTP {resp.status}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    size += len(chunk)
                    if size > MAX_METRICS_BYTES:
                        raise MetricsUnavailable(f"{url} sent more than {MAX_METRICS_BYTES} bytes")
                    chunks.append(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else repr(exc))
            raise MetricsUnavailable(f"{url}: {why}") from exc
        return b"".join(chunks).decode("utf-8", errors="replace")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
