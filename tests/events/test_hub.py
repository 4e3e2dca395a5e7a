"""The hub: each subscriber's own bounded queue, an overflow event for one that fell behind,
close() ending every reader, and a cancelled get() losing nothing."""

from __future__ import annotations

import asyncio

from pxproxy.events.hub import OVERFLOW, Event, EventHub


async def test_every_subscriber_gets_every_event_in_order() -> None:
    hub = EventHub()
    a, b = hub.subscribe(), hub.subscribe()
    for n in range(3):
        hub.publish(Event("poll", {"n": n}))
    hub.close()
    assert [e.data["n"] async for e in a] == [0, 1, 2]
    assert [e.data["n"] async for e in b] == [0, 1, 2]
    assert hub.subscribers == 0


async def test_a_slow_reader_gets_overflow_then_its_stream_ends_and_others_go_on() -> None:
    hub = EventHub()
    slow, fast = hub.subscribe(max_queue=2), hub.subscribe()
    for n in range(5):
        hub.publish(Event("poll", {"n": n}))
    assert slow.dropped
    assert hub.subscribers == 1
    kinds = [e.kind async for e in slow]
    assert kinds == ["poll", "poll", OVERFLOW]
    hub.publish(Event("poll", {"n": 5}))
    hub.close()
    assert [e.data["n"] async for e in fast] == [0, 1, 2, 3, 4, 5]


async def test_a_reader_is_dropped_at_its_byte_bound_and_reading_frees_room() -> None:
    hub = EventHub()
    big = {"guests": "x" * 1000}  # ~1 KB of JSON each
    sub = hub.subscribe(max_bytes=3500)
    for _ in range(3):
        hub.publish(Event("stats", big))
    assert not sub.dropped
    first = await sub.get()  # taking one frees its bytes
    assert first is not None
    hub.publish(Event("stats", big))
    assert not sub.dropped
    hub.publish(Event("stats", big))  # the fifth: 4 queued would pass 3,500 bytes
    assert sub.dropped
    kinds = [e.kind async for e in sub]
    assert kinds == ["stats", "stats", "stats", OVERFLOW]


async def test_a_subscriber_after_close_ends_at_once_and_publishing_is_a_no_op() -> None:
    hub = EventHub()
    hub.close()
    sub = hub.subscribe()
    hub.publish(Event("poll", {}))
    assert await sub.get() is None
    assert await sub.get() is None  # ended stays ended
    assert hub.published == 0


async def test_a_get_cancelled_by_a_timeout_loses_no_event() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    try:
        async with asyncio.timeout(0.01):
            await sub.get()
    except TimeoutError:
        pass
    hub.publish(Event("routes", {"at": 1.0}))
    event = await sub.get()
    assert event is not None
    assert event.kind == "routes"


async def test_closing_a_subscription_twice_ends_it_once() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    hub.publish(Event("poll", {}))
    sub.close()
    sub.close()
    assert [e.kind async for e in sub] == ["poll"]
    assert hub.subscribers == 0


def test_json_is_encoded_once() -> None:
    event = Event("poll", {"cluster": "home"})
    assert event.json() == '{"cluster":"home"}'
    assert event.json() is event.json()
