"""Which hub events become notices: only the turns, never a step or a repeat."""

from __future__ import annotations

import email.utils

from pxproxy.events.hub import Event
from pxproxy.webhooks.backoff import RETRY_AFTER_MAX_S, backoff_delay, retry_after_s
from pxproxy.webhooks.notices import NoticeMaker

from .support import NAMES, poll, wake


def kinds(events: list[Event]) -> list[str]:
    maker = NoticeMaker(NAMES.get)
    return [n.event for e in events if (n := maker.notice(e)) is not None]


def test_ready_only_ends_a_wake() -> None:
    # A guest found running (asleep -> ready, or ready at start) is no news; a failed idle
    # stop goes back to ready (stopping -> ready): no news either.
    events = [
        wake("lab:7361", "ready"),
        wake("lab:7361", "stopping"),
        wake("lab:7361", "ready"),
        wake("lab:7361", "asleep"),
        wake("lab:7361", "waking", "starting"),
        wake("lab:7361", "waking", "waiting for the port"),
        wake("lab:7361", "ready"),
        wake("lab:7361", "ready"),
        wake("lab:7362", "failed", error="no"),
        wake("lab:7362", "failed", error="still no"),
    ]
    assert kinds(events) == ["wake", "ready", "wake_failed"]


def test_pending_and_unknown_events_are_ignored() -> None:
    events = [
        poll("lab", "pending"),
        poll("lab", "ok"),
        Event("guests", {"cluster": "lab", "changed": [], "removed": [], "at": 1.0}),
        Event("idle", {"guest": "lab:7361", "event": "before_stop", "detail": None, "at": 1.0}),
        Event("wake", {"state": "waking"}),  # no guest: nothing to say
        poll("lab", "degraded"),
    ]
    assert kinds(events) == ["cluster_degraded"]


def test_an_unknown_guest_still_gets_its_ref() -> None:
    notice = NoticeMaker(NAMES.get).notice(wake("lab:7379", "waking"))
    assert notice is not None
    assert (notice.guest, notice.name, notice.cluster, notice.vmid) == (
        "lab:7379",
        None,
        "lab",
        7379,
    )


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    low = [backoff_delay(n, 1.0, 10.0, lambda: 0.0) for n in range(1, 7)]
    high = [backoff_delay(n, 1.0, 10.0, lambda: 1.0) for n in range(1, 7)]
    assert low == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert high == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_retry_after_in_seconds_or_as_a_date() -> None:
    now = 1_700_000_000.0
    assert retry_after_s("30", now) == 30.0
    assert retry_after_s(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after_s(email.utils.formatdate(now - 90, usegmt=True), now) == 0.0
    assert retry_after_s("999999", now) == RETRY_AFTER_MAX_S
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None
