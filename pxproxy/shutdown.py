"""The daemon's stop signal, as long-lived exchanges see it.

When the daemon begins to stop, follow streams, execs, WebSockets and requests held for a wake
must end themselves with a proper last word (a final line, a close frame, a 503), so that the
grace period is left to requests that can finish. Each races its work against `Stopping`.
Nothing here knows aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")

STOPPING_MESSAGE = "pxproxy is stopping"


class DaemonStopping(Exception):
    """The daemon began to stop before the work finished; the work was cancelled."""

    def __init__(self) -> None:
        super().__init__(STOPPING_MESSAGE)


class Stopping:
    """Set once, when the daemon begins to stop; never cleared."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()

    async def race(self, work: Awaitable[T]) -> T:
        """Await `work`; if the daemon begins to stop first, cancel it, await its cleanup (a
        remote shell gets its Ctrl-C and is closed), then raise DaemonStopping."""
        task = asyncio.ensure_future(work)
        if self._event.is_set():
            task.cancel()
        stop = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
            # Always let the work finish its cleanup, even when we ourselves are cancelled.
            await asyncio.gather(task, stop, return_exceptions=True)
        if task.cancelled() and self._event.is_set():
            raise DaemonStopping
        return task.result()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel an owned background task and await its end (its own cleanup included)."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller itself is being cancelled: pass that on
