"""ClusterPoller without sockets: failures publish stale data, back off, and never end polling;
rejected entries are counted and logged, and too many keep the last good snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

import pytest
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.inventory import rejections
from pxproxy.inventory.ip_resolution import IpResolver
from pxproxy.inventory.poller import ClusterPoller, PollSettings
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics
from pxproxy.pve.errors import PveConnectionError
from pxproxy.pve.models import ClusterStatus

from ..api.test_endpoints import config, ok_json
from ..builders import make_guest
from .test_ingest import entry

RESOURCES = json.dumps(
    {
        "data": [
            {"id": "lxc/101", "type": "lxc", "vmid": 101, "node": "pve1", "status": "stopped"},
            {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online"},
        ]
    }
).encode()


class ScriptedSource:
    """Answers /cluster/resources from a script of results (an exception is raised)."""

    def __init__(self, script: list[bytes | BaseException]) -> None:
        self.script = script
        self.calls = 0

    async def cluster_resources_raw(self, kind: str | None = None) -> bytes:
        item = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return item

    async def cluster_status(self) -> ClusterStatus:
        return ClusterStatus(cluster_name=None, quorate=None, nodes=())

    async def lxc_interfaces(self, node: str, vmid: int) -> object:
        return None

    async def qemu_agent_interfaces(self, node: str, vmid: int) -> object:
        return None

    async def guest_config(self, kind: str, node: str, vmid: int) -> dict[str, object]:
        return {}


async def run_until(inventory: Inventory, poller: ClusterPoller, predicate, timeout_s=5.0):
    task = asyncio.create_task(poller.run())
    try:
        return await inventory.wait_until(predicate, timeout_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(
    script: list[bytes | BaseException],
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] | None = None,
) -> tuple[Inventory, ClusterPoller, ScriptedSource]:
    inventory = Inventory()
    source = ScriptedSource(script)
    poller = ClusterPoller(
        "home",
        source,
        IpResolver(source),
        inventory.publish,
        settings=PollSettings(interval_s=0.01, backoff_max_s=0.02),
        on_poll=metrics.on_poll if metrics else None,
        on_rejected=metrics.on_rejected if metrics else None,
        clock=clock or time.monotonic,
    )
    return inventory, poller, source


async def test_unexpected_error_does_not_end_polling() -> None:
    inventory, poller, source = make([RuntimeError("bug"), RESOURCES])
    snap = await run_until(
        inventory, poller, lambda s: "home" in s.clusters and s.clusters["home"].ok
    )
    assert [g.vmid for g in snap.guests] == [101]
    assert source.calls >= 2
    assert poller.stats.failures == 1


async def test_failure_before_any_success_reports_error_and_no_age() -> None:
    inventory, poller, _ = make([PveConnectionError("cannot reach pve")])
    snap = await run_until(inventory, poller, lambda s: "home" in s.clusters)
    cs = snap.clusters["home"]
    assert not cs.ok
    assert cs.error == "cannot reach pve"
    assert cs.age_s() is None


async def test_failure_after_success_keeps_last_data() -> None:
    inventory, poller, _ = make([RESOURCES, PveConnectionError("down")])
    snap = await run_until(
        inventory, poller, lambda s: "home" in s.clusters and not s.clusters["home"].ok
    )
    cs = snap.clusters["home"]
    assert [g.vmid for g in cs.guests] == [101]
    assert cs.error == "down"
    assert cs.age_s() is not None


async def test_backoff_grows_and_is_capped() -> None:
    _, poller, _ = make([RESOURCES])
    poller.stats.consecutive_failures = 1
    first = poller._backoff_s()
    poller.stats.consecutive_failures = 50
    capped = poller._backoff_s()
    assert 0.01 * 0.8 <= first <= 0.01 * 1.2
    assert capped <= 0.02 * 1.2


# ------------------------------------------------------------------ rejected entries


class Clock:
    """Monotonic time the test moves by hand: the rate limit is proved without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


NODE = {"id": "node/pve", "type": "node", "node": "pve", "status": "online"}
REJECTIONS_LOG = "pxproxy.inventory.rejections"
POLLER_LOG = "pxproxy.inventory.poller"


def resources(*entries: object) -> bytes:
    return json.dumps({"data": [NODE, *entries]}).encode()


def guests(*vmids: int, **fields: object) -> list[dict[str, object]]:
    return [entry(v, "lxc", **fields) for v in vmids]


GOOD = resources(*guests(301, 302, 303, 304))
# Three of four guests come back malformed: 3 > 4 / 2, so the poll is held.
BAD = resources(
    entry(301, vmid="three hundred and one"),
    entry(302, name=5),
    entry(303, vmid=99999999999999999999),
    entry(304),
    entry(304),  # a duplicate: rejected, but 304 itself is kept
)


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "pxproxy_poll_entries_rejected_total", {"cluster": "home", "reason": reason}
    )
    return value or 0.0


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def test_rejected_entries_are_dropped_counted_and_named_in_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    body = resources(*guests(301, 302, 305, 306), entry(303, name=5), entry(99), entry(302))
    inventory, poller, _ = make([body], metrics=metrics, clock=Clock())
    with caplog.at_level(logging.WARNING, REJECTIONS_LOG):
        snap = await poller.poll_once()
    assert [g.vmid for g in snap.guests] == [301, 302, 305, 306]
    assert snap.ok  # nothing was known before, and most entries were fine
    assert snap.warnings[-1] == (
        "3 /cluster/resources entries rejected (first: lxc/303: name 5 is not a string); "
        "see the log"
    )
    assert inventory.snapshot.clusters["home"] is snap
    assert rejected(metrics, "wrong_type") == 1
    assert rejected(metrics, "vmid_range") == 1
    assert rejected(metrics, "duplicate") == 1
    assert poller.stats.rejected == 3
    assert warnings_about(caplog, "rejected:") == [
        "cluster home: /cluster/resources entry lxc/303 rejected: name 5 is not a string",
        "cluster home: /cluster/resources entry lxc/99 rejected: vmid 99 is outside 100..999999999",
        "cluster home: /cluster/resources entry lxc/302 rejected: duplicate id",
    ]


async def test_warnings_are_rate_limited_per_id_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    first = resources(entry(301), entry(302, name=5))
    later = resources(entry(301), entry(302, name=6))  # same id, another reason
    _, poller, source = make([first, first, later, first], clock=clock)
    with caplog.at_level(logging.WARNING, REJECTIONS_LOG):
        await poller.poll_once()
        clock.now += rejections.REPEAT_AFTER_S - 1
        await poller.poll_once()  # the same again within the window: silent
        assert len(warnings_about(caplog, "lxc/302")) == 1
        await poller.poll_once()  # a new reason for the same id is news
        assert len(warnings_about(caplog, "lxc/302")) == 2
        clock.now += 1
        await poller.poll_once()  # the first reason, its window over: logged again
    assert [m.split(": ")[-1] for m in warnings_about(caplog, "lxc/302")] == [
        "name 5 is not a string",
        "name 6 is not a string",
        "name 5 is not a string",
    ]
    assert poller.stats.rejected == source.calls == 4  # counted every time, logged when due


async def test_a_flood_of_bad_entries_logs_a_burst_and_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    body = resources(*guests(*range(1000, 1100), name=5))
    _, poller, _ = make([body], clock=clock)
    with caplog.at_level(logging.WARNING, REJECTIONS_LOG):
        await poller.poll_once()
        await poller.poll_once()
    assert len(warnings_about(caplog, "rejected: name 5")) == rejections.BURST
    assert warnings_about(caplog, "more /cluster/resources entries") == [
        "cluster home: 80 more /cluster/resources entries rejected, not logged one by one "
        "(see pxproxy_poll_entries_rejected_total)"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, REJECTIONS_LOG):
        clock.now += rejections.REFILL_S * 3
        await poller.poll_once()
    assert len(warnings_about(caplog, "rejected: name 5")) == 3  # the bucket refilled by three
    assert warnings_about(caplog, "more /cluster/resources") == []  # summary once per window


async def test_mostly_rejected_poll_keeps_the_last_good_snapshot_then_recovers(
    caplog: pytest.LogCaptureFixture, aiohttp_client: AiohttpClient
) -> None:
    metrics = Metrics()
    inventory, poller, _ = make([GOOD, BAD, BAD, GOOD], metrics=metrics, clock=Clock())
    inventory.publish(ClusterSnapshot.build("lab", [make_guest(101, cluster="lab")], ()))
    cfg = config()
    metrics.watch_inventory(lambda: inventory.snapshot, cfg.cluster_names)
    api = await aiohttp_client(build_app(make_context(cfg, inventory, metrics, True)))

    good = await poller.poll_once()
    assert (await ok_json(await api.get("/health")))["status"] == "ok"

    with caplog.at_level(logging.INFO, "pxproxy.inventory"):
        held = await poller.poll_once()
        again = await poller.poll_once()
    assert [g.vmid for g in held.guests] == [301, 302, 303, 304]
    assert held.guests is good.guests  # the very data of the last good poll
    assert (held.ok, held.degraded, held.state) == (False, True, "degraded")
    reason = (
        "3 of 4 guests would vanish because 4 /cluster/resources entries were rejected "
        "(first: lxc/301: vmid 'three hundred and one' is not an integer); "
        "keeping the last good inventory"
    )
    assert held.error == reason
    assert again.error == reason
    assert inventory.snapshot.clusters["home"] is again
    assert poller.stats.held == 2
    assert rejected(metrics, "wrong_type") == 2 * 2
    assert rejected(metrics, "vmid_range") == 2
    assert rejected(metrics, "duplicate") == 2
    # Said once when it happened, not every poll.
    assert warnings_about(caplog, "degraded") == [f"cluster home: degraded: {reason}"]

    body = await ok_json(await api.get("/health"))
    assert body["status"] == "degraded"
    home = body["clusters"][0]
    assert home["name"] == "home"
    assert (home["ok"], home["state"], home["guests"], home["error"]) == (
        False,
        "degraded",
        4,
        reason,
    )
    assert body["clusters"][1]["state"] == "ok"
    up = metrics.registry.get_sample_value("pxproxy_cluster_up", {"cluster": "home"})
    assert up == 0.0

    caplog.clear()
    with caplog.at_level(logging.INFO, "pxproxy.inventory"):
        recovered = await poller.poll_once()
        assert inventory.snapshot.clusters["home"] is recovered
        await poller.poll_once()  # still good: nothing more to say
    assert recovered.ok
    assert recovered.state == "ok"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "cluster home: recovered: /cluster/resources accepted again (4 guests, 0 entries rejected)"
    ]
    body = await ok_json(await api.get("/health"))
    assert body["status"] == "ok"
    assert body["clusters"][0]["state"] == "ok"
    assert "error" not in body["clusters"][0]


async def test_guests_that_vanish_without_rejections_are_published() -> None:
    # Deleted in Proxmox (or out of the token's sight) is not malformed: no hold.
    _, poller, _ = make([GOOD, resources(entry(301), {"bad": "entry"})], clock=Clock())
    await poller.poll_once()
    snap = await poller.poll_once()
    assert snap.ok
    assert [g.vmid for g in snap.guests] == [301]  # one anonymous rejection explains one of three


async def test_half_lost_is_not_more_than_half() -> None:
    body = resources(entry(301), entry(302), entry(303, name=5), entry(304, name=5))
    _, poller, _ = make([GOOD, body], clock=Clock())
    await poller.poll_once()
    snap = await poller.poll_once()
    assert snap.ok
    assert [g.vmid for g in snap.guests] == [301, 302]


async def test_held_snapshot_survives_a_failed_poll_and_recovers_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inventory, poller, _ = make([GOOD, BAD, PveConnectionError("down"), GOOD], clock=Clock())
    with caplog.at_level(logging.INFO, POLLER_LOG):
        snap = await run_until(
            inventory,
            poller,
            lambda s: "home" in s.clusters and s.clusters["home"].ok and poller.stats.cycles == 2,
        )
    assert [g.vmid for g in snap.guests] == [301, 302, 303, 304]
    assert poller.stats.held == 1
    assert poller.stats.failures == 1
    messages = [r.getMessage() for r in caplog.records if r.name == POLLER_LOG]
    assert [m.split(":")[1].strip() for m in messages] == ["degraded", "poll failed", "recovered"]


async def test_first_poll_mostly_rejected_is_published_degraded_and_not_a_baseline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = resources(entry(301), entry(302, name=5), entry(303, name=5))
    second = resources(entry(301), entry(302, name=5), entry(303, name=5))
    inventory, poller, _ = make([first, second, GOOD], clock=Clock())
    with caplog.at_level(logging.INFO, POLLER_LOG):
        snap = await poller.poll_once()
        assert [g.vmid for g in snap.guests] == [301]  # nothing older to keep: what passed
        assert snap.state == "degraded"
        assert snap.error == (
            "2 of 3 guest entries in /cluster/resources were rejected (first: lxc/302: "
            "name 5 is not a string); no earlier inventory to keep"
        )
        assert poller.last is None  # so the next poll is not measured against it
        assert (await poller.poll_once()).state == "degraded"
        assert (await poller.poll_once()).state == "ok"
    assert inventory.snapshot.clusters["home"].guests[-1].vmid == 304
    messages = [r.getMessage() for r in caplog.records if r.name == POLLER_LOG]
    assert [m.split(":")[1].strip() for m in messages] == ["degraded", "recovered"]


async def test_health_states_of_clusters_failed_and_not_polled(
    aiohttp_client: AiohttpClient,
) -> None:
    inventory, poller, _ = make([GOOD, PveConnectionError("down")], clock=Clock())
    api = await aiohttp_client(build_app(make_context(config(), inventory, Metrics(), True)))
    await poller.poll_once()
    poller._failed("down")  # what run() does when a poll raises
    body = await ok_json(await api.get("/health"))
    assert [(c["name"], c["state"], c.get("error")) for c in body["clusters"]] == [
        ("home", "failed", "down"),
        ("lab", "pending", "not polled yet"),
    ]
    assert body["status"] == "degraded"
