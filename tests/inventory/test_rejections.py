"""The hold rule and the rejection log on their own, without a poller."""

from __future__ import annotations

import logging

import pytest

from pxproxy.inventory import rejections
from pxproxy.inventory.ingest import EntryKind, Rejection
from pxproxy.inventory.rejections import (
    RejectionLog,
    hold_reason,
    lost_to_rejection,
    unanchored_reason,
)

from ..builders import make_guest

PREVIOUS = tuple(make_guest(v) for v in (301, 302, 303, 304))


def bad(vmid: int | None, entry: EntryKind = "guest") -> Rejection:
    label = f"lxc/{vmid}" if vmid else "entry #0"
    return Rejection(label, entry, vmid, "wrong_type", "name 5 is not a string")


@pytest.mark.parametrize(
    ("kept", "rejected", "lost"),
    [
        ((301, 302, 303, 304), [bad(301)], 0),  # rejected a duplicate of a kept guest
        ((301,), [], 0),  # deleted in Proxmox: not a rejection
        ((301,), [bad(302)], 1),  # 303 and 304 were deleted; 302 was rejected
        ((301,), [bad(302), bad(303), bad(304)], 3),
        ((301,), [bad(None), bad(None), bad(None), bad(None)], 3),  # anonymous: one each
        ((301,), [bad(302), bad(None)], 2),
        ((301,), [bad(302), bad(302)], 1),  # two entries claiming one guest explain one
        ((301,), [bad(None, "node"), bad(None, "node"), bad(None, "node")], 0),
        ((301,), [bad(999)], 0),  # a guest we never had
    ],
)
def test_lost_to_rejection(kept: tuple[int, ...], rejected: list[Rejection], lost: int) -> None:
    now = [make_guest(v) for v in kept]
    assert lost_to_rejection(PREVIOUS, now, rejected) == lost


def test_hold_only_when_more_than_half_is_lost() -> None:
    two = [bad(303), bad(304)]
    assert hold_reason(PREVIOUS, PREVIOUS[:2], two) is None  # exactly half
    three = [bad(302), bad(303), bad(304)]
    reason = hold_reason(PREVIOUS, PREVIOUS[:1], three)
    assert reason == (
        "3 of 4 guests would vanish because 3 /cluster/resources entries were rejected "
        "(first: lxc/302: name 5 is not a string); keeping the last good inventory"
    )
    assert hold_reason((), [], three) is None  # nothing to keep


def test_unanchored_reason_counts_guest_entries_only() -> None:
    kept = [make_guest(301)]
    assert unanchored_reason(kept, [bad(302)]) is None  # one of two: not more than half
    assert unanchored_reason(kept, [bad(None, "node"), bad(None, "node")]) is None
    assert unanchored_reason(kept, [bad(302), bad(None)]) == (
        "2 of 3 guest entries in /cluster/resources were rejected "
        "(first: lxc/302: name 5 is not a string); no earlier inventory to keep"
    )


def test_the_log_remembers_a_bounded_number_of_entries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rejections, "MAX_REMEMBERED", 8)
    monkeypatch.setattr(rejections, "BURST", 1000)
    now = [0.0]
    log = RejectionLog("home", lambda: now[0])
    with caplog.at_level(logging.WARNING, rejections.__name__):
        assert log.report([bad(v) for v in range(300, 320)]) == 20
        assert len(log._logged) == 8
        # Forgotten ones may repeat early; remembered ones stay quiet within the window.
        assert log.report([bad(319)]) == 0
        now[0] += rejections.REPEAT_AFTER_S
        assert log.report([bad(319)]) == 1
