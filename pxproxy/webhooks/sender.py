"""One webhook's queue and the task that empties it: each delivery tried until it lands, is
refused for good, or runs out of retries. One slow or dead endpoint only ever holds its own
queue; offering to a full one drops the notice and counts it."""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from ..events.hub import Event
from .backoff import backoff_delay, retry_after_s
from .config import WebhookConfig
from .formats import USER_AGENT, Rendered, clean, render
from .notices import Notice
from .signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from .status import Failure, WebhookStatus

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
# Statuses worth another try besides 5xx: the endpoint timed out or asks us to slow down.
_RETRYABLE_4XX = frozenset({408, 429})
ERROR_BODY_BYTES = 200  # of a refusal's body, kept in the error (Discord says why there)


@dataclass(frozen=True, slots=True)
class Delivery:
    notice: Notice
    rendered: Rendered
    id: str


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None


class WebhookSender:
    def __init__(
        self,
        config: WebhookConfig,
        publish: Callable[[Event], None],
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self.config = config
        self._publish = publish
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self.status = WebhookStatus(config.name, config.format, config.host, config.events)
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=config.queue)
        self._busy = False

    def adopt(self, status: WebhookStatus) -> None:
        """Go on with the counts of the webhook of the same name before a reload; its format,
        host and events are this one's."""
        status.format, status.host = self.config.format, self.config.host
        status.events = self.config.events
        self.status = status

    @property
    def queued(self) -> int:
        """Deliveries not yet done: waiting, and the one being tried."""
        return self._queue.qsize() + (1 if self._busy else 0)

    def offer(self, notice: Notice) -> bool:
        """Queue a delivery of `notice`, never waiting; False (and counted) when full."""
        delivery = Delivery(notice, render(notice, self.config.format), uuid.uuid4().hex)
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            self.status.dropped += 1
            return False
        return True

    async def run(self) -> None:
        async with aiohttp.ClientSession(
            # Our own bound per attempt; nothing else of the session's may hold a delivery.
            timeout=aiohttp.ClientTimeout(total=None),
            headers={"User-Agent": USER_AGENT},
        ) as session:
            while True:
                delivery = await self._queue.get()
                self._busy = True
                try:
                    await self._deliver(session, delivery)
                except Exception:  # a bug in one delivery must not end the webhook
                    log.exception("webhook %s: delivery failed", self.config.name)
                finally:
                    self._busy = False
                    self._queue.task_done()

    async def drained(self) -> None:
        """Until every queued delivery is done (the daemon bounds the wait)."""
        await self._queue.join()

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        config, notice = self.config, delivery.notice
        attempt = 0
        while True:
            attempt += 1
            outcome = await self._attempt(session, delivery)
            at = self._clock()
            self.status.attempts += 1
            self._publish(
                Event(
                    "webhook",
                    {
                        "name": config.name,
                        "event": notice.event,
                        "ok": outcome.ok,
                        "status": outcome.status,
                        "error": outcome.error,
                        "attempt": attempt,
                        "at": at,
                    },
                    guest=notice.guest,
                    at=at,
                )
            )
            if outcome.ok:
                self.status.succeeded(at)
                return
            error = outcome.error or "failed"
            self.status.attempt_failed(error, at)
            if not outcome.retryable or attempt > config.retries:
                break
            delay = outcome.retry_after_s
            if delay is None:
                delay = backoff_delay(attempt, config.backoff, config.backoff_max, self._random)
            await self._sleep(delay)
        self.status.gave_up(Failure(notice.event, notice.guest, at, attempt, outcome.status, error))
        log.warning(
            "webhook %s: %s not delivered after %d attempt(s): %s",
            config.name,
            notice.event,
            attempt,
            error,
            extra={"webhook": config.name, "event": notice.event, "guest": notice.guest},
        )

    def _headers(self, delivery: Delivery) -> dict[str, str]:
        config = self.config
        headers = {
            **delivery.rendered.headers,
            "X-Pxproxy-Event": delivery.notice.event,
            "X-Pxproxy-Delivery": delivery.id,  # the same on every attempt: receivers dedupe
        }
        secret = config.secret.get_secret_value() if config.secret is not None else None
        if config.format == "json":
            # Signed per attempt: a retry an hour later still passes a freshness check.
            timestamp = int(self._clock())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            if secret is not None:
                headers[SIGNATURE_HEADER] = signature(secret, timestamp, delivery.rendered.body)
        elif config.format == "ntfy" and secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        return headers

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> Outcome:
        config = self.config
        try:
            async with session.post(
                config.url,
                data=delivery.rendered.body,
                headers=self._headers(delivery),
                # A redirect would carry the signature or token to wherever it points.
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=config.timeout),
            ) as resp:
                if 200 <= resp.status < 300:
                    return Outcome(True, resp.status)
                text = (await resp.content.read(ERROR_BODY_BYTES)).decode("utf-8", "replace")
                status = resp.status
                retry_after = retry_after_s(resp.headers.get("Retry-After"), self._clock())
        except TimeoutError:
            return Outcome(False, error=f"timed out after {config.timeout:g}s", retryable=True)
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            return Outcome(
                False, error=f"cannot connect to {config.host}: {reason}", retryable=True
            )
        except aiohttp.ClientError as exc:
            return Outcome(False, error=self._scrub(f"{type(exc).__name__}: {exc}"), retryable=True)
        error = f"HTTP {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed: give the final URL)"
        if text.strip():
            error += f": {self._scrub(clean(text))}"
        retryable = status >= 500 or status in _RETRYABLE_4XX
        return Outcome(
            False,
            status,
            error,
            retryable,
            retry_after if status == 429 or status == 503 else None,
        )

    def _scrub(self, text: str) -> str:
        """The URL's path and query (where endpoints keep tokens) out of an error text."""
        parts = urlsplit(self.config.url)
        text = text.replace(self.config.url, self.config.host)
        # Longest first: the path with its query, then each alone (an echo may hold either).
        secrets = (f"{parts.path}?{parts.query}", parts.path, parts.query, parts.fragment)
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret.strip("/?")) >= 2:
                text = text.replace(secret, "…")
        return text
