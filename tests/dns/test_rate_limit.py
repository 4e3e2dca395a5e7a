"""Token buckets on a fake clock: no sleeps."""

from __future__ import annotations

from pxproxy.dns.rate_limit import TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_second=10, burst=5, clock=clock)
    assert [buckets.allow("a") for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.1  # one token back
    assert [buckets.allow("a") for _ in range(2)] == [True, False]
    clock.now += 60  # refilled up to the burst, no more
    assert sum(buckets.allow("a") for _ in range(10)) == 5


def test_clients_have_their_own_buckets() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_second=1, burst=2, clock=clock)
    assert [buckets.allow("a") for _ in range(3)] == [True, True, False]
    assert [buckets.allow("b") for _ in range(3)] == [True, True, False]


def test_the_number_of_clients_is_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(per_second=1, burst=2, clock=clock, max_clients=100)
    for i in range(100):
        buckets.allow(f"10.0.0.{i}")
    assert len(buckets) == 100
    buckets.allow("busy")  # none has refilled yet: all forgotten to make room
    assert len(buckets) == 1
    for i in range(99):
        buckets.allow(f"10.0.1.{i}")
    clock.now += 1.0
    buckets.allow("10.0.1.0")  # one stays recent; the rest refilled meanwhile...
    clock.now += 1.5
    buckets.allow("10.0.1.1")
    buckets.allow("new")  # ...and only the refilled ones are forgotten
    assert 1 < len(buckets) < 100
