"""Per-client token buckets: `per_client` queries a second with bursts of `burst`. A client is
its source address (not its port). The clock is injectable, so tests need no sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

# Clients remembered at most; beyond it, buckets that have refilled are forgotten (a full
# bucket is the same as none), and if that frees nothing, all of them.
MAX_CLIENTS = 65_536


class TokenBuckets:
    def __init__(
        self,
        per_second: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._rate = per_second
        self._burst = float(burst)
        self._clock = clock
        self._max = max_clients
        # client -> [tokens, time of the last refill]
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, client: str) -> bool:
        """Take one token of the client's bucket; False (nothing taken) when it is empty."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._prune(now)
            self._buckets[client] = [self._burst - 1.0, now]
            return True
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        full_after_s = self._burst / self._rate
        for client in [c for c, (_, last) in self._buckets.items() if now - last >= full_after_s]:
            del self._buckets[client]
        if len(self._buckets) >= self._max:
            self._buckets.clear()
