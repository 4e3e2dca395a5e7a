"""The StatsHub alone, over a fake client: what is left once watchers came and went."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from typing import cast

import pytest

from pxproxy.pve.client import GuestType, PveClient
from pxproxy.pve.models import GuestStatus, parse_guest_status
from pxproxy.streams.stats import StatsHub, StatsSample

from ..support import wait_for


class FakeStatus:
    """`guest_status` answering at once; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def guest_status(self, guest_type: GuestType, node: str, vmid: int) -> GuestStatus:
        self.calls += 1
        return parse_guest_status({"vmid": vmid, "status": "running", "name": "ct"})


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees: what a cycle holds stays until the test is over."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_watchers_that_come_and_go_leave_no_feed_task_or_cycle(no_cyclic_gc: None) -> None:
    api = FakeStatus()
    hub = StatsHub({"lab": cast(PveClient, api)}, interval_s=0.01)
    await hub.start()
    polls: list[weakref.ref[asyncio.Task[None]]] = []
    for _ in range(200):
        async with hub.watch_guest("lab", "lxc", "pve1", 101) as watch:
            assert isinstance(await watch.next(), StatsSample)
            (task,) = hub._tasks
            polls.append(weakref.ref(task))
            del task
        # Each stream's own poll ended with it: nothing accumulates from one to the next.
        await wait_for(lambda: not hub._tasks, 5, "the poll task to end")
        assert (hub.active_feeds, hub.watchers) == (0, 0)
    # Freed by reference counting alone: no poll task (nor its feed) sits in a reference
    # cycle waiting for the cyclic gc.
    assert [ref for ref in polls if ref() is not None] == []
    assert api.calls >= 200
    await hub.close()
