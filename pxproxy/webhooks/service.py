"""The webhooks as the daemon owns them: one hub subscription, one sender task per webhook.

The hub never waits on a webhook: the dispatcher only turns events into notices and offers
them (a full queue drops, counted); all network waiting happens in the senders' own tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as random_module
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..events.hub import EventHub, Subscription
from ..shutdown import cancel_and_wait
from .config import WebhookConfig
from .guest_filter import GuestFilter
from .notices import GuestInfo, NoticeMaker
from .sender import Sleep, WebhookSender

log = logging.getLogger(__name__)

# On stop, what is queued gets this long to be delivered; the rest is dropped (and logged).
DRAIN_S = 3.0
# The dispatcher only hands events on, so it keeps up; this is room for a burst of polls.
SUBSCRIPTION_QUEUE = 10_000


class Webhooks:
    def __init__(
        self,
        configs: Sequence[WebhookConfig],
        hub: EventHub,
        guest_info: GuestInfo,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = random_module.random,
        drain_s: float = DRAIN_S,
    ) -> None:
        self._hub = hub
        self._maker = NoticeMaker(guest_info)
        self._drain_s = drain_s
        self._sleep, self._clock, self._random = sleep, clock, random
        self.senders = [
            WebhookSender(c, hub.publish, sleep=sleep, clock=clock, random=random) for c in configs
        ]
        self._filters = [GuestFilter(c.guests) for c in configs]
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        self.resubscribed = 0  # the dispatcher fell behind the hub (should not happen)

    def start(self) -> None:
        if not self.senders:
            return  # no webhooks: not even a subscription
        for sender in self.senders:
            self._tasks.append(
                asyncio.create_task(sender.run(), name=f"webhook-{sender.config.name}")
            )
        # Subscribed now, not when the task first runs: nothing published from here is missed.
        self._subscription = self._hub.subscribe(max_queue=SUBSCRIPTION_QUEUE)
        self._dispatcher = asyncio.create_task(
            self._dispatch(self._subscription), name="webhooks-dispatch"
        )

    async def _dispatch(self, subscription: Subscription) -> None:
        while True:
            try:
                async for event in subscription:
                    notice = self._maker.notice(event)
                    if notice is None:
                        continue
                    for sender, guests in zip(self.senders, self._filters, strict=True):
                        if notice.event in sender.config.events and guests.admits(notice):
                            sender.offer(notice)
            finally:
                subscription.close()
            if not subscription.dropped or self._subscription is None:
                return  # the hub closed, or stop() closed it: pxproxy stops
            self.resubscribed += 1
            log.warning("webhooks fell behind the event hub; some events were not sent")
            subscription = self._subscription = self._hub.subscribe(max_queue=SUBSCRIPTION_QUEUE)

    async def stop(self) -> None:
        """Stop taking events, give the queues `drain_s` to empty, then end the senders."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()  # ends the dispatcher once it has offered what came before
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_s):
                if self._dispatcher is not None:
                    await asyncio.shield(self._dispatcher)
                await asyncio.gather(*(s.drained() for s in self.senders))
        await cancel_and_wait(self._dispatcher)
        self._dispatcher = None
        for sender in self.senders:
            if sender.queued:
                log.warning(
                    "webhook %s: %d delivery(ies) not sent before the stop",
                    sender.config.name,
                    sender.queued,
                )
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks.clear()

    def successor(self, configs: Sequence[WebhookConfig]) -> Webhooks:
        """Webhooks for a reloaded config, not yet started. They go on from this one's view of
        wake and cluster states (a wake that began before the reload still ends in `ready`),
        and a webhook that keeps its name keeps its counts and recent failures."""
        new = Webhooks(
            configs,
            self._hub,
            self._maker.guest_info,
            sleep=self._sleep,
            clock=self._clock,
            random=self._random,
            drain_s=self._drain_s,
        )
        new._maker = self._maker
        kept = {s.config.name: s.status for s in self.senders}
        for sender in new.senders:
            status = kept.get(sender.config.name)
            if status is not None:
                sender.adopt(status)
        return new

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The running tasks: each sender's and the dispatcher (for tests and the stop)."""
        return (*self._tasks, *([self._dispatcher] if self._dispatcher else []))

    def describe(self) -> list[dict[str, Any]]:
        """Each webhook as GET /api/v1/webhooks shows it: never the URL's path or a secret."""
        return [s.status.to_json(s.queued) for s in self.senders]
