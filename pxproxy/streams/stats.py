"""Live guest and node statistics with fan-out.

While anyone watches a guest (or a node), ONE owned task polls its status once per interval and
every watcher reads the same samples: N watchers cost one upstream call per second, nobody
watching costs nothing (the task ends with the last watcher). A failed poll is published as an
error event and the poll backs off until it succeeds again.

Publishing is O(1) whatever the number of watchers: the feed keeps the latest event and a version
number, and sets one asyncio.Event that every waiting watcher shares. A slow watcher skips to the
newest sample instead of queueing old ones (statistics are latest-wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..error_table import problem_for
from ..pve.client import GuestType, PveClient
from ..pve.errors import PveError
from .formatting import NO_RATES, GuestSample, NodeSample, Rates, parse_guest, parse_node, rates

__all__ = ["FeedKey", "StatsError", "StatsEvent", "StatsHub", "StatsSample", "Watch"]

log = logging.getLogger(__name__)

INTERVAL_S = 1.0
BACKOFF_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class FeedKey:
    kind: Literal["guest", "node"]
    cluster: str
    node: str
    guest_type: GuestType | None = None
    vmid: int | None = None


@dataclass(frozen=True, slots=True)
class StatsSample:
    """A guest sample with its rates, or a node sample (then `rates` is NO_RATES)."""

    sample: GuestSample | NodeSample
    rates: Rates = NO_RATES


@dataclass(frozen=True, slots=True)
class StatsError:
    """A failed poll. `status` is the HTTP status the API answers with before streaming."""

    time: float
    message: str
    status: int
    title: str = "Bad Gateway"


StatsEvent = StatsSample | StatsError


def error_event(exc: PveError, now: float, key: FeedKey) -> StatsError:
    """A failed poll, with the status and wording of the one error table."""
    guest = f"{key.guest_type}/{key.vmid}" if key.kind == "guest" else None
    problem = problem_for(exc, cluster=key.cluster, node=key.node, guest=guest)
    return StatsError(now, problem.detail, problem.status, problem.title)


class HubClosedError(Exception):
    """The hub was closed while a watcher waited (the daemon is stopping)."""


class _Feed:
    """One polled object and its watchers. Owned by the hub."""

    def __init__(self, key: FeedKey) -> None:
        self.key = key
        self.watchers = 0
        self.latest: StatsEvent | None = None
        self.version = 0
        self.changed = asyncio.Event()
        self.closed = False
        self.task: asyncio.Task[None] | None = None

    def publish(self, event: StatsEvent) -> None:
        self.latest = event
        self.version += 1
        # Wake every waiting watcher with one set(), then give later waits a fresh event.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def shut(self) -> None:
        self.closed = True
        self.changed.set()


class Watch:
    """A watcher of one feed: `await next()` returns each new event (skipping to the newest)."""

    def __init__(self, hub: StatsHub, feed: _Feed) -> None:
        self._hub = hub
        self._feed = feed
        self._seen = 0
        self._released = False

    async def next(self) -> StatsEvent:
        feed = self._feed
        while feed.version == self._seen or feed.latest is None:
            if feed.closed:
                raise HubClosedError("the stats hub is closed")
            await feed.changed.wait()
        self._seen = feed.version
        return feed.latest

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._hub._release(self._feed)

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class StatsHub:
    """Fan-out of guest and node statistics; `start()` before use, `close()` at the end."""

    def __init__(
        self,
        clients: Mapping[str, PveClient],
        *,
        interval_s: float = INTERVAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = clients
        self._interval = interval_s
        self._backoff_max = max(backoff_max_s, interval_s)
        self._clock = clock
        self._feeds: dict[FeedKey, _Feed] = {}
        # Every poll task, including ones cancelled but not yet finished: close() awaits them.
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    @property
    def active_feeds(self) -> int:
        return len(self._feeds)

    @property
    def polling_tasks(self) -> int:
        """Poll tasks alive, cancelled ones not yet finished included: 0 means no more calls."""
        return len(self._tasks)

    @property
    def watchers(self) -> int:
        return sum(f.watchers for f in self._feeds.values())

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        """Wake every watcher with HubClosedError and await every poll task."""
        self._closed = True
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            feed.shut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def has_client(self, cluster: str) -> bool:
        return cluster in self._clients

    def watch_guest(self, cluster: str, guest_type: GuestType, node: str, vmid: int) -> Watch:
        return self._watch(FeedKey("guest", cluster, node, guest_type, vmid))

    def watch_node(self, cluster: str, node: str) -> Watch:
        return self._watch(FeedKey("node", cluster, node))

    def _watch(self, key: FeedKey) -> Watch:
        if self._closed or not self._started:
            raise HubClosedError("the stats hub is not running")
        if key.cluster not in self._clients:
            raise KeyError(key.cluster)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed(key)
        feed.watchers += 1
        if feed.task is None:
            task = asyncio.get_running_loop().create_task(
                self._poll(feed), name=f"stats:{key.cluster}:{key.node}:{key.vmid or ''}"
            )
            feed.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return Watch(self, feed)

    def _release(self, feed: _Feed) -> None:
        feed.watchers -= 1
        if feed.watchers > 0:
            return
        # The last watcher left: stop polling now. The task stays in _tasks until it finishes.
        if self._feeds.get(feed.key) is feed:
            del self._feeds[feed.key]
        # Drop the feed's reference to its task: the cancelled task keeps its CancelledError,
        # whose traceback holds the poll's frame and so the feed. With the reference the two
        # form a cycle that only the cyclic gc frees, one per stream that came and went.
        task, feed.task = feed.task, None
        if task is not None:
            task.cancel()

    def _fetcher(self, key: FeedKey) -> Callable[[], Awaitable[StatsEvent]]:
        client = self._clients[key.cluster]
        clock = self._clock
        if key.kind == "node":

            async def fetch_node() -> StatsEvent:
                status = await client.node_status(key.node)
                return StatsSample(parse_node(key.node, status, clock()))

            return fetch_node
        assert key.guest_type is not None
        assert key.vmid is not None
        guest_type, vmid = key.guest_type, key.vmid
        prev: list[GuestSample] = []

        async def fetch_guest() -> StatsEvent:
            data = await client.guest_status(guest_type, key.node, vmid)
            sample = parse_guest(data, clock())
            event = StatsSample(sample, rates(prev[0] if prev else None, sample))
            prev[:] = [sample]
            return event

        return fetch_guest

    async def _poll(self, feed: _Feed) -> None:
        fetch = self._fetcher(feed.key)
        loop = asyncio.get_running_loop()
        delay = self._interval
        next_at = loop.time()
        while True:
            try:
                event = await fetch()
            except PveError as exc:
                feed.publish(error_event(exc, self._clock(), feed.key))
                # Back off while it fails: a node that is down is not asked every second.
                delay = min(delay * 2, self._backoff_max)
                next_at = loop.time() + delay
            except Exception as exc:  # a bug must not kill the feed silently
                log.exception("stats poll of %s failed", feed.key)
                feed.publish(
                    StatsError(
                        self._clock(), f"internal error: {exc}", 500, "Internal Server Error"
                    )
                )
                delay = min(delay * 2, self._backoff_max)
                next_at = loop.time() + delay
            else:
                feed.publish(event)
                delay = self._interval
                # Fixed rate, not fixed delay: one call per interval even if a call takes time;
                # after a stall, start counting again from now rather than bursting.
                next_at = max(next_at + self._interval, loop.time())
            await asyncio.sleep(max(0.0, next_at - loop.time()))
