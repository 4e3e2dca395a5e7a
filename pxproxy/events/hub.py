"""The event hub: producers publish, each subscriber gets its own bounded queue.

Publishing never waits and never fails: a subscriber that falls more than its queue behind is
dropped (its iterator ends after an `overflow` event), so one stalled dashboard costs nobody
else anything. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_QUEUE = 1024
# And in bytes of JSON: a `guests` or `stats` event of 1,000 guests is ~100 KB, so a stalled
# reader is dropped at this much rather than holding a thousand of them.
DEFAULT_QUEUE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # hello, poll, guests, stats, wake, idle, routes, webhook, overflow
    data: Mapping[str, Any]
    # The guest it is about (cluster:vmid), for allowlist filtering; None: about no guest.
    guest: str | None = None
    at: float = field(default_factory=time.time)
    _json: str | None = field(default=None, init=False, repr=False, compare=False)

    def json(self) -> str:
        """`data` as compact JSON, encoded once however many readers send it."""
        text = self._json
        if text is None:
            text = json.dumps(self.data, separators=(",", ":"))
            object.__setattr__(self, "_json", text)
        return text


OVERFLOW = "overflow"


class Subscription:
    """One reader's queue; iterate it (`async for event in sub`), close it when done."""

    def __init__(self, hub: EventHub, max_queue: int, max_bytes: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._max = max_queue
        self._max_bytes = max_bytes
        self._bytes = 0  # of the queued events' JSON
        self.dropped = False
        self._ended = False  # the end marker is queued
        self._finished = False  # the reader took it

    def _offer(self, event: Event) -> None:
        if self._ended:
            return
        size = len(event.json())
        if self._queue.qsize() >= self._max or self._bytes + size > self._max_bytes:
            self.dropped = True
            self._ended = True
            self._queue.put_nowait(Event(OVERFLOW, {"reason": "reader too slow"}))
            self._queue.put_nowait(None)
            self._hub._forget(self)
            return
        self._bytes += size
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Ends the iterator (after what is queued); closing twice is harmless."""
        self._hub._forget(self)
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    async def get(self) -> Event | None:
        """The next event, or None once the subscription ended. Safe to cancel (a timeout
        around it loses no event), unlike cancelling the iterator's __anext__."""
        if self._finished:
            return None
        event = await self._queue.get()
        if event is None:
            self._finished = True
        elif event.kind != OVERFLOW:
            self._bytes -= len(event.json())
        return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event


class EventHub:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.published = 0  # for tests and metrics
        self.closed = False

    def publish(self, event: Event) -> None:
        if self.closed:
            return
        self.published += 1
        for sub in list(self._subscribers):
            sub._offer(event)

    def subscribe(
        self, *, max_queue: int = DEFAULT_QUEUE, max_bytes: int = DEFAULT_QUEUE_BYTES
    ) -> Subscription:
        sub = Subscription(self, max_queue, max_bytes)
        if self.closed:
            sub.close()  # pxproxy is stopping: the reader gets an ended stream at once
        else:
            self._subscribers.add(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """pxproxy stops: every subscriber's iterator ends, and later ones end at once."""
        self.closed = True
        for sub in list(self._subscribers):
            sub.close()

    def _forget(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
