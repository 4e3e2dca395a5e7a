"""Stopping.race: the work or the stop signal, whichever comes first; cleanup always awaited."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.shutdown import DaemonStopping, Stopping


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
