"""ActivityWatch with a fake clock, scripted metrics and hand-fed snapshots: which readings
count as activity, and what an unreadable source does."""

from __future__ import annotations

import logging

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.wake.activity import ActivityWatch, source_of

from ...support import wait_for
from ..fakes import CLUSTER, FakeClock, guest, publish
from .fakes import (
    METRICS_URL,
    Gates,
    ScriptedFetch,
    activity_route,
    metrics,
    options,
    store,
)

WIKI = activity_route("wiki.example.com", "wiki", "traefik")
WIKI_SERVICE = "pxproxy-wiki-example-com-"  # + a hash (integrations/names.py)
GAME = activity_route("game.example.com", "game", "traffic", threshold=4096)


def wiki_service() -> str:
    return source_of(WIKI).removeprefix("traefik: ")


def traffic_guest(netin: int, netout: int = 0, *, uptime: int = 100, **kw: object) -> Guest:
    status = str(kw.get("status", "running"))
    return guest(201, "game", status=status)._replace(netin=netin, netout=netout, uptime=uptime)


def watch_for(
    *routes: RouteConfig,
    fetch: ScriptedFetch | None = None,
    inventory: Inventory | None = None,
    url: str | None = METRICS_URL,
) -> tuple[ActivityWatch, Gates, FakeClock]:
    gates, clock = Gates(), FakeClock()
    watch = ActivityWatch(
        store(*routes),
        inventory or Inventory(),
        gates,
        lambda: options(url),
        clock=clock,
        fetch=fetch or ScriptedFetch(),
    )
    return watch, gates, clock


# ---------------------------------------------------------------------------- sources


def test_source_of_names_each_source() -> None:
    assert wiki_service().startswith(WIKI_SERVICE)
    assert wiki_service().endswith("@http")
    assert source_of(GAME) == "traffic > 4096 B/poll"
    assert source_of(activity_route("a.example.com", "a", "proxy")) == "proxy"
    named = activity_route("b.example.com", "b", "traefik", service="blog@docker")
    assert source_of(named) == "traefik: blog@docker"


# ---------------------------------------------------------------------------- traefik


async def test_requests_that_grew_count_and_a_flat_counter_does_not() -> None:
    fetch = ScriptedFetch(metrics({wiki_service(): 10}))
    watch, gates, clock = watch_for(WIKI, fetch=fetch)

    await watch.poll_traefik()  # the first read is a baseline: those requests have any age
    assert gates.count("wiki.example.com") == 0
    reading = watch.reading(WIKI)
    assert reading is not None
    assert not reading.active

    fetch.text = metrics({wiki_service(): 13})
    clock.advance(5)
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 1
    reading = watch.reading(WIKI)
    assert reading is not None
    assert reading.active
    assert "+3" in reading.detail

    clock.advance(5)
    await watch.poll_traefik()  # flat
    assert gates.count("wiki.example.com") == 1
    assert fetch.urls == [METRICS_URL] * 3
    assert watch.stats.traefik_polls == 3
    described = watch.describe(WIKI)
    assert described["source"] == "traefik"
    assert described["reading"]["active"] is False


async def test_a_service_that_appears_after_the_baseline_is_activity() -> None:
    fetch = ScriptedFetch(metrics({"other@file": 1}))
    watch, gates, _ = watch_for(WIKI, fetch=fetch)
    await watch.poll_traefik()
    fetch.text = metrics({"other@file": 1, wiki_service(): 1})  # Traefik's first request
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 1


async def test_open_connections_count_while_the_counter_is_flat() -> None:
    service = wiki_service()
    fetch = ScriptedFetch(metrics({service: 5}, open_connections={service: 1}))
    watch, gates, _ = watch_for(WIKI, fetch=fetch)
    await watch.poll_traefik()
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 2
    fetch.text = metrics({service: 5}, open_connections={service: 0})
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 2


async def test_a_restarted_traefik_counts_what_it_served_since() -> None:
    fetch = ScriptedFetch(metrics({wiki_service(): 100}))
    watch, gates, _ = watch_for(WIKI, fetch=fetch)
    await watch.poll_traefik()
    fetch.text = metrics({})  # restarted, nothing served yet: no series at all
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 0
    fetch.text = metrics({wiki_service(): 2})
    await watch.poll_traefik()
    fetch.text = metrics({wiki_service(): 100})
    await watch.poll_traefik()
    assert gates.count("wiki.example.com") == 2


async def test_the_service_named_in_the_route_is_read_with_or_without_provider() -> None:
    bare = activity_route("a.example.com", "a", "traefik", service="blog")
    exact = activity_route("b.example.com", "b", "traefik", service="blog@docker")
    fetch = ScriptedFetch(metrics({"blog@file": 1, "blog@docker": 1}))
    watch, gates, _ = watch_for(bare, exact, fetch=fetch)
    await watch.poll_traefik()
    fetch.text = metrics({"blog@file": 2, "blog@docker": 1})
    await watch.poll_traefik()
    assert (gates.count("a.example.com"), gates.count("b.example.com")) == (1, 0)


async def test_routes_without_idle_or_on_another_source_are_not_polled() -> None:
    plain = activity_route("a.example.com", "a", "traefik", idle=False)
    fetch = ScriptedFetch(metrics({}))
    watch, _, _ = watch_for(plain, GAME, fetch=fetch)
    await watch.poll_traefik()
    assert fetch.urls == []
    assert watch.stats.traefik_polls == 0


async def test_unreadable_metrics_hold_the_guest_and_warn_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="pxproxy.wake.activity")
    fetch = ScriptedFetch(metrics({wiki_service(): 1}))
    watch, gates, clock = watch_for(WIKI, fetch=fetch)
    await watch.poll_traefik()

    fetch.error = "connection refused"
    for _ in range(3):
        clock.advance(5)
        await watch.poll_traefik()
    # Each failed read pushes the idle deadline back, as an open connection would.
    assert gates.count("wiki.example.com") == 3
    assert watch.stats.held == {"wiki.example.com": 3}
    assert watch.stats.traefik_failures == 3
    reading = watch.reading(WIKI)
    assert reading is not None
    assert reading.held
    assert "connection refused" in reading.detail
    levels = [r.levelno for r in caplog.records if "unreadable" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG]

    # Requests served during the outage count once the metrics read again.
    fetch.error = None
    fetch.text = metrics({wiki_service(): 4})
    clock.advance(5)
    await watch.poll_traefik()
    assert watch.stats.signalled == {"wiki.example.com": 1}
    assert any("read again after 15s" in r.getMessage() for r in caplog.records)

    clock.advance(5)
    await watch.poll_traefik()  # flat again: nothing holds the guest any more
    assert gates.count("wiki.example.com") == 4


async def test_a_traefik_route_without_a_metrics_url_is_held() -> None:
    # Only a guest's notes can get here: the config check refuses such a file.
    watch, gates, _ = watch_for(WIKI, url=None)
    await watch.poll_traefik()
    reading = watch.reading(WIKI)
    assert reading is not None
    assert reading.held
    assert "integrations.traefik.metrics_url" in reading.detail
    assert gates.count("wiki.example.com") == 1


# ---------------------------------------------------------------------------- traffic


def test_traffic_growth_above_the_threshold_is_activity() -> None:
    inventory = Inventory()
    watch, gates, _ = watch_for(GAME, inventory=inventory)
    publish(inventory, traffic_guest(1_000_000))
    watch.observe_traffic(inventory.snapshot)  # baseline
    assert gates.count("game.example.com") == 0

    publish(inventory, traffic_guest(1_003_000, 1_096))  # +4096: not above the threshold
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 0

    publish(inventory, traffic_guest(1_003_000, 5_193))  # +4097
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 1
    reading = watch.reading(GAME)
    assert reading is not None
    assert reading.active
    assert reading.detail.startswith("+4097 B")


def test_a_snapshot_without_a_new_poll_of_the_cluster_is_not_compared() -> None:
    inventory = Inventory()
    watch, gates, _ = watch_for(GAME, inventory=inventory)
    publish(inventory, traffic_guest(0))
    watch.observe_traffic(inventory.snapshot)
    publish(inventory, traffic_guest(100_000))
    inventory.publish(ClusterSnapshot.build("other", (), ()))  # another cluster's poll
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 1
    inventory.publish(ClusterSnapshot.build("other", (), ()))
    watch.observe_traffic(inventory.snapshot)  # "home" was not polled again: no comparison
    assert gates.count("game.example.com") == 1
    assert watch.stats.traffic_rounds == 3


def test_a_restart_resets_the_baseline() -> None:
    inventory = Inventory()
    watch, gates, _ = watch_for(GAME, inventory=inventory)
    publish(inventory, traffic_guest(5_000_000, uptime=1000))
    watch.observe_traffic(inventory.snapshot)
    publish(inventory, traffic_guest(50_000, uptime=3))  # counters went backwards
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 0
    publish(inventory, traffic_guest(9_000_000, uptime=2))  # grew, but uptime went back
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 0
    assert watch._traffic.resets == 2
    publish(inventory, traffic_guest(9_010_000, uptime=5))
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 1


def test_a_stopped_guest_is_no_activity_and_starts_a_new_baseline() -> None:
    inventory = Inventory()
    watch, gates, _ = watch_for(GAME, inventory=inventory)
    publish(inventory, traffic_guest(1_000))
    watch.observe_traffic(inventory.snapshot)
    publish(inventory, traffic_guest(0, status="stopped"))
    watch.observe_traffic(inventory.snapshot)
    reading = watch.reading(GAME)
    assert reading is not None
    assert reading.detail == "guest stopped"
    publish(inventory, traffic_guest(900_000))  # booted: the first figure is a baseline
    watch.observe_traffic(inventory.snapshot)
    assert gates.count("game.example.com") == 0


def test_a_failed_poll_holds_the_guest() -> None:
    inventory = Inventory()
    watch, gates, _ = watch_for(GAME, inventory=inventory)
    publish(inventory, traffic_guest(1_000))
    watch.observe_traffic(inventory.snapshot)
    cluster = inventory.snapshot.clusters[CLUSTER]
    inventory.publish(cluster.failed("connection refused"))
    watch.observe_traffic(inventory.snapshot)
    assert watch.stats.held == {"game.example.com": 1}
    reading = watch.reading(GAME)
    assert reading is not None
    assert reading.held
    assert "connection refused" in reading.detail
    assert gates.count("game.example.com") == 1


def test_routes_to_one_guest_share_one_comparison_with_their_own_thresholds() -> None:
    inventory = Inventory()
    low = activity_route("low.example.com", "game", "traffic", threshold=10)
    high = activity_route("high.example.com", "201", "traffic", threshold=1_000_000)
    watch, gates, _ = watch_for(low, high, inventory=inventory)
    publish(inventory, traffic_guest(0))
    watch.observe_traffic(inventory.snapshot)
    publish(inventory, traffic_guest(5_000))
    watch.observe_traffic(inventory.snapshot)
    assert (gates.count("low.example.com"), gates.count("high.example.com")) == (1, 0)


def test_a_route_removed_from_the_set_is_forgotten() -> None:
    inventory = Inventory()
    routes = store(GAME)
    gates = Gates()
    watch = ActivityWatch(routes, inventory, gates, options, clock=FakeClock())
    publish(inventory, traffic_guest(0))
    watch.observe_traffic(inventory.snapshot)
    assert watch.reading(GAME) is not None
    routes.publish([], [])
    publish(inventory, traffic_guest(100_000))
    watch.observe_traffic(inventory.snapshot)
    assert watch.reading(GAME) is None
    assert gates.count("game.example.com") == 0


# ---------------------------------------------------------------------------- the task


async def test_the_task_polls_metrics_and_follows_snapshots_until_stopped() -> None:
    inventory = Inventory()
    publish(inventory, traffic_guest(0))
    fetch = ScriptedFetch(metrics({wiki_service(): 1}))
    routes = store(WIKI, GAME)
    gates = Gates()
    watch = ActivityWatch(routes, inventory, gates, lambda: options(interval=0.02), fetch=fetch)
    watch.start()
    await wait_for(lambda: len(fetch.urls) >= 1, 5, "the first metrics read")
    fetch.text = metrics({wiki_service(): 2})
    await wait_for(lambda: gates.count("wiki.example.com") == 1, 5, "Traefik activity")
    publish(inventory, traffic_guest(100_000))
    await wait_for(lambda: gates.count("game.example.com") == 1, 5, "traffic activity")
    task = watch._task
    assert task is not None
    assert not task.done()
    await watch.stop()
    assert task.cancelled()
    assert watch._task is None
