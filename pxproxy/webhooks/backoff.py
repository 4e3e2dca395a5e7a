"""How long a webhook waits before its next attempt."""

from __future__ import annotations

import email.utils
from collections.abc import Callable

# A Retry-After beyond this is cut to it: a misbehaving endpoint cannot park a queue for a day.
RETRY_AFTER_MAX_S = 3600.0


def backoff_delay(retry: int, first_s: float, max_s: float, random: Callable[[], float]) -> float:
    """Before retry number `retry` (1, 2, ...): `first_s` doubled each time, capped at `max_s`,
    with "equal jitter" (half fixed, half random) so endpoints that failed together do not all
    come back at once, and no wait is ever near zero."""
    ceiling = min(max_s, first_s * 2.0 ** (retry - 1))
    return ceiling / 2 + random() * ceiling / 2


def retry_after_s(value: str | None, now: float) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from `now`; None if absent
    or unreadable (the usual backoff applies then)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # "²".isdigit(), yet float("²") raises
        return min(float(text), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - now, RETRY_AFTER_MAX_S))
