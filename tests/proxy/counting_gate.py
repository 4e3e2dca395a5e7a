"""A gate for the workers' tests that counts what is done to it: activity, and holds entered
and exited (a daemon-side gate as a worker's reports or relayed requests reach it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

from pxproxy.wake.contract import WakeProgress, WakeState


class CountingGate:
    wake_timeout_s = 60.0

    def __init__(self, state: WakeState = WakeState.READY) -> None:
        self.state = state
        self.activities = 0
        self.entered = 0
        self.exited = 0

    @property
    def held(self) -> int:
        return self.entered - self.exited

    async def ready(self, *, wake: bool = True) -> None:
        return None

    def activity(self) -> None:
        self.activities += 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.entered += 1
        try:
            yield
        finally:
            self.exited += 1

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(self.state, "fake")
