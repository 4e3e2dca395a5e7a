"""Stopping.race: the work or the stop signal, whichever comes first; cleanup always awaited."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.shutdown import DaemonStopping, Stopping, cancel_and_wait


async def test_work_that_finishes_first_returns_its_result() -> None:
    assert await Stopping().race(asyncio.sleep(0, "done")) == "done"


async def test_work_errors_pass_through() -> None:
    async def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await Stopping().race(fail())


async def test_stop_cancels_the_work_and_awaits_its_cleanup() -> None:
    stopping = Stopping()
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits, like closing a websocket
            cleaned.set()

    racing = asyncio.create_task(stopping.race(work()))
    await started.wait()
    stopping.set()
    with pytest.raises(DaemonStopping, match="pxproxy is stopping"):
        await racing
    assert cleaned.is_set()


async def test_already_stopping_never_runs_the_work() -> None:
    stopping = Stopping()
    stopping.set()
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(DaemonStopping):
        await stopping.race(work())
    assert not ran


async def test_a_cancelled_caller_still_cancels_and_awaits_the_work() -> None:
    stopping = Stopping()
    started, cleaned = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    racing = asyncio.create_task(stopping.race(work()))
    await started.wait()
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert cleaned.is_set()
    assert not stopping.is_set()


async def test_cancel_and_wait_ends_the_task_and_keeps_the_callers_cancel() -> None:
    ended = asyncio.Event()

    async def owned() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    task = asyncio.create_task(owned())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert ended.is_set()
    await cancel_and_wait(None)

    # A caller cancelled while it waits is cancelled, not silently carried on.
    slow_ended = asyncio.Event()

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a cleanup that itself awaits
            slow_ended.set()

    inner = asyncio.create_task(slow_cleanup())
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(slow_ended.wait(), 5)  # the owned task still finished its cleanup
