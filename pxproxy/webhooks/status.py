"""What each webhook has done: counts, the last error and success, its recent failures.

Only the URL's host is ever kept here: the path and query often carry the endpoint's token."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

RECENT_FAILURES = 20


@dataclass(frozen=True, slots=True)
class Failure:
    event: str
    guest: str | None
    at: float
    attempts: int
    status: int | None
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "guest": self.guest,
            "at": self.at,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
        }


@dataclass(slots=True)
class WebhookStatus:
    name: str
    format: str
    host: str
    events: tuple[str, ...]
    delivered: int = 0
    failed: int = 0  # deliveries given up on (after their retries, or not retryable)
    attempts: int = 0
    dropped: int = 0  # offered while the queue was full
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    recent_failures: deque[Failure] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))

    def succeeded(self, at: float) -> None:
        self.delivered += 1
        self.last_success_at = at

    def gave_up(self, failure: Failure) -> None:
        self.failed += 1
        self.recent_failures.append(failure)

    def attempt_failed(self, error: str, at: float) -> None:
        self.last_error, self.last_error_at = error, at

    def to_json(self, queued: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "host": self.host,
            "events": list(self.events),
            "delivered": self.delivered,
            "failed": self.failed,
            "attempts": self.attempts,
            "dropped": self.dropped,
            "queued": queued,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
            "recent_failures": [f.to_json() for f in reversed(self.recent_failures)],
        }
