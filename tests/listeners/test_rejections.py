"""One line per rejected request, at most LINES_PER_WINDOW per window, the rest summed up."""

from __future__ import annotations

import logging

import pytest

from pxproxy.listeners.rejections import RejectionLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_cut_to_a_few_lines_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pxproxy.listeners")
    clock = Clock()
    reject = RejectionLog("api", per_window=3, window_s=10.0, clock=clock)
    for i in range(50):
        reject(f"10.0.0.1:{i}", "malformed header")
    assert len(caplog.records) == 3
    assert caplog.records[0].getMessage() == (
        "rejected a request from 10.0.0.1:0 on the api listener: malformed header"
    )
    clock.now += 10.0
    reject("10.0.0.2:1", "more than 100 header lines")
    messages = [r.getMessage() for r in caplog.records[3:]]
    assert messages == [
        "47 more requests rejected on the api listener were not logged",
        "rejected a request from 10.0.0.2:1 on the api listener: more than 100 header lines",
    ]
    assert all(r.levelno == logging.INFO and not r.exc_info for r in caplog.records)
