"""The lab's journals: cursors, filters, follow wake-ups and the PVE API answer shape."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from pxproxy.lab.journal import (
    CursorError,
    Journal,
    JournalTicker,
    api_journal_lines,
    format_json,
    format_line,
)

SHORT = re.compile(r"^[A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} pve1 [\w.-]+(\[\d+\])?: .+$")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_generated_history_is_deterministic_and_short_formatted() -> None:
    a = Journal("pve1", seed=7, history=30, clock=Clock())
    b = Journal("pve1", seed=7, history=30, clock=Clock())
    lines_a = [format_line(e) for e in a.entries()]
    assert lines_a == [format_line(e) for e in b.entries()]
    assert len(lines_a) == 30
    assert all(SHORT.match(line) for line in lines_a), lines_a
    idents = {e.ident for e in a.entries()}
    assert idents & {"pveproxy", "pvedaemon", "pvestatd", "sshd", "CRON", "systemd", "kernel"}
    c = Journal("pve1", seed=8, history=30, clock=Clock())
    assert [e.message for e in c.entries()] != [e.message for e in a.entries()]


def test_format_line_exact() -> None:
    j = Journal("pve1", clock=lambda: 1_700_701_323.0)  # 2023-11-23 01:02:03 UTC
    e = j.append("pveproxy", "worker 1 started", unit="pveproxy.service", pid=1234)
    assert format_line(e) == "Nov 23 01:02:03 pve1 pveproxy[1234]: worker 1 started"
    k = j.append("kernel", "hello")
    assert format_line(k) == "Nov 23 01:02:03 pve1 kernel: hello"
    data = json.loads(format_json(e))
    assert data["MESSAGE"] == "worker 1 started"
    assert data["_SYSTEMD_UNIT"] == "pveproxy.service"
    assert data["__CURSOR"] == e.cursor


def test_cursors_are_monotonic_and_resume_after() -> None:
    j = Journal("pve1", clock=Clock())
    entries = j.generate(5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert len({e.cursor for e in entries}) == 5
    assert all(e.cursor.startswith(f"s={j.seqnum_id};i=") for e in entries)
    after = j.entries(after_cursor=entries[2].cursor)
    assert [e.seq for e in after] == [4, 5]
    assert j.entries(limit=2) == entries[-2:]
    assert j.entries(limit=0) == []


def test_bad_and_foreign_cursors_are_rejected() -> None:
    j = Journal("pve1", seed=1, history=3)
    other = Journal("pve2", seed=1, history=3)
    with pytest.raises(CursorError):
        j.entries(after_cursor="garbage")
    with pytest.raises(CursorError):
        j.entries(after_cursor=other.entries()[0].cursor)


def test_service_filter_matches_unit_or_identifier() -> None:
    j = Journal("pve1", clock=Clock())
    j.append("pveproxy", "a", unit="pveproxy.service", pid=1)
    j.append("sshd", "b", unit="ssh.service", pid=2)
    j.append("pvedaemon", "c", unit="pvedaemon.service", pid=3)
    assert [e.message for e in j.entries(services=["pveproxy"])] == ["a"]
    assert [e.message for e in j.entries(services=["ssh.service", "pvedaemon"])] == ["b", "c"]
    assert [e.message for e in j.entries(services=["sshd"])] == ["b"]
    assert j.entries(services=["nginx"]) == []


def test_bounded_memory_keeps_sequence_numbers() -> None:
    j = Journal("pve1", max_entries=10, clock=Clock())
    j.generate(25)
    assert len(j) <= 10
    assert j.entries()[-1].seq == 25
    assert j.last_seq == 25


async def test_wait_for_new_wakes_on_append_and_times_out() -> None:
    j = Journal("pve1", history=2, clock=Clock())
    cursor = j.last_cursor
    assert await j.wait_for_new(cursor, timeout=0.05) is False

    waiter = asyncio.create_task(j.wait_for_new(cursor, timeout=5))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiter.done()
    j.append("sshd", "new", unit="ssh.service")
    async with asyncio.timeout(2):
        assert await waiter is True


async def test_wait_for_new_respects_service_filter() -> None:
    j = Journal("pve1", clock=Clock())
    waiter = asyncio.create_task(j.wait_for_new(None, timeout=5, services=["nginx"]))
    await asyncio.sleep(0)
    j.append("sshd", "not it", unit="ssh.service")
    await asyncio.sleep(0)
    assert not waiter.done()
    j.append("nginx", "it", unit="nginx.service")
    async with asyncio.timeout(2):
        assert await waiter is True


async def test_follow_yields_new_entries_in_order() -> None:
    j = Journal("pve1", history=3, clock=Clock())
    got: list[str] = []

    async def reader() -> None:
        async for e in j.follow(services=["pvedaemon"]):
            got.append(e.message)
            if len(got) == 2:
                return

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    j.append("pvedaemon", "one", unit="pvedaemon.service")
    j.append("sshd", "skip", unit="ssh.service")
    j.append("pvedaemon", "two", unit="pvedaemon.service")
    async with asyncio.timeout(2):
        await task
    assert got == ["one", "two"]


async def test_ticker_appends_and_stops() -> None:
    j = Journal("pve1", clock=Clock())
    ticker = JournalTicker(j, interval=0.01)
    ticker.start()
    assert ticker.running
    async with asyncio.timeout(5):
        while len(j) < 3:
            await j.wait_for_new(None, timeout=1)
    await ticker.stop()
    assert not ticker.running
    count = len(j)
    assert await j.wait_for_new(None, timeout=0.05) is False
    assert len(j) == count


def test_api_shape_first_and_last_are_cursors() -> None:
    j = Journal("pve1", history=80, clock=Clock())
    lines = api_journal_lines(j)
    assert len(lines) == 52  # default 50 entries + two cursors
    assert lines[0] == j.entries(limit=50)[0].cursor
    assert lines[-1] == j.last_cursor
    assert all(SHORT.match(line) for line in lines[1:-1])

    lines = api_journal_lines(j, lastentries=5)
    assert len(lines) == 7
    # Follow: from the end cursor nothing is new, and both cursors stay put.
    assert api_journal_lines(j, startcursor=lines[-1]) == [lines[-1], lines[-1]]
    j.append("pveproxy", "fresh", unit="pveproxy.service", pid=9)
    more = api_journal_lines(j, startcursor=lines[-1])
    assert len(more) == 3
    assert more[1].endswith("pveproxy[9]: fresh")
    assert more[0] == more[-1] == j.last_cursor


def test_api_service_and_endcursor() -> None:
    j = Journal("pve1", clock=Clock())
    first = j.append("pveproxy", "p1", unit="pveproxy.service")
    j.append("sshd", "s1", unit="ssh.service")
    mid = j.append("pveproxy", "p2", unit="pveproxy.service")
    j.append("pveproxy", "p3", unit="pveproxy.service")
    lines = api_journal_lines(j, service=["pveproxy"], endcursor=mid.cursor)
    assert [line.rsplit(": ", 1)[1] for line in lines[1:-1]] == ["p1", "p2"]
    assert lines[0] == first.cursor
    assert lines[-1] == mid.cursor
    with pytest.raises(CursorError):
        api_journal_lines(j, startcursor="s=nope;i=1")
