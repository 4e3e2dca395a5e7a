"""One log line per rejected request, rate-limited: a flood of malformed requests must not
flood the log. Lines carry the peer and a fixed reason, never request bytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("pxproxy.listeners")

# At most this many lines per window; the rest are counted and summed up in one line.
LINES_PER_WINDOW = 10
WINDOW_S = 10.0


class RejectionLog:
    def __init__(
        self,
        listener: str,
        *,
        logger: logging.Logger = log,
        per_window: int = LINES_PER_WINDOW,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._listener = listener
        self._log = logger
        self._per_window = per_window
        self._window_s = window_s
        self._clock = clock
        self._window_end = 0.0
        self._logged = 0
        self._suppressed = 0

    def __call__(self, peer: str, reason: str) -> None:
        now = self._clock()
        if now >= self._window_end:
            if self._suppressed:
                self._log.info(
                    "%d more requests rejected on the %s listener were not logged",
                    self._suppressed,
                    self._listener,
                )
            self._window_end = now + self._window_s
            self._logged = 0
            self._suppressed = 0
        if self._logged >= self._per_window:
            self._suppressed += 1
            return
        self._logged += 1
        self._log.info(
            "rejected a request from %s on the %s listener: %s", peer, self._listener, reason
        )
