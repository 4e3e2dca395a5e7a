"""Webhooks against a real HTTP endpoint on loopback: what is sent, signed, retried, dropped."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from pxproxy import __version__
from pxproxy.events.hub import Event
from pxproxy.webhooks.signing import verify

from ..support import wait_for
from .receiver import receiver
from .support import FakeSleeper, hook, poll, wake, webhooks

SECRET = "hmac-secret-for-tests"


async def test_json_is_signed_over_timestamp_and_body_and_says_wake_then_ready() -> None:
    async with (
        receiver() as recv,
        webhooks([hook("ops", recv.url("/ok"), secret=SECRET)]) as (
            service,
            hub,
        ),
    ):
        hub.publish(wake("lab:7361", "asleep"))
        hub.publish(wake("lab:7361", "waking", "starting"))
        hub.publish(wake("lab:7361", "waking", "waiting for the port"))  # a step: no new notice
        hub.publish(wake("lab:7361", "ready"))
        await wait_for(lambda: len(recv.requests) == 2, 10, "two deliveries")
        assert service.describe()[0]["delivered"] == 2
    first, second = recv.requests
    for request in recv.requests:
        timestamp = request.headers["X-Pxproxy-Timestamp"]
        assert abs(int(timestamp) - time.time()) < 60
        # What a receiver computes, written out without pxproxy's helper.
        mac = hmac.new(SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
        assert request.headers["X-Pxproxy-Signature"] == "sha256=" + mac.hexdigest()
        assert verify(SECRET, timestamp, request.body, request.headers["X-Pxproxy-Signature"])
        # The same body under another timestamp does not verify: a replay needs a fresh one.
        assert not verify(SECRET, str(int(timestamp) + 1), request.body, mac.hexdigest())
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["User-Agent"] == f"pxproxy/{__version__}"
    assert json.loads(first.body) == {
        "event": "wake",
        "guest": "lab:7361",
        "name": "wiki",
        "node": "pve1",
        "routes": ["wiki.test"],
        "state": "waking",
        "error": None,
        "cluster": "lab",
        "at": 1_700_000_000.0,
        "pxproxy": __version__,
    }
    assert json.loads(second.body)["event"] == "ready"
    assert first.headers["X-Pxproxy-Event"] == "wake"


async def test_500_is_retried_with_capped_exponential_backoff_then_counted() -> None:
    sleeper = FakeSleeper()
    async with receiver() as recv:
        config = hook("ops", recv.url("/status/500"), retries=3, backoff="1s", backoff_max="3s")
        async with webhooks([config], sleeper) as (service, hub):
            attempts = hub.subscribe()
            hub.publish(wake("lab:7361", "waking"))
            await wait_for(lambda: service.describe()[0]["failed"] == 1, 10, "the give-up")
            status = service.describe()[0]
        assert len(recv.requests) == 4
    # Jitter fixed at 0.5: three quarters of 1, 2, then 4 capped at 3.
    assert sleeper.delays == [0.75, 1.5, 2.25]
    assert status["attempts"] == 4
    assert status["delivered"] == 0
    assert status["last_error"].startswith("HTTP 500")
    assert status["recent_failures"][0]["attempts"] == 4
    assert status["recent_failures"][0]["status"] == 500
    tries = [e async for e in attempts if e.kind == "webhook"]
    assert [e.data["attempt"] for e in tries] == [1, 2, 3, 4]
    assert {(e.data["ok"], e.data["status"], e.guest) for e in tries} == {(False, 500, "lab:7361")}


async def test_410_is_not_retried() -> None:
    sleeper = FakeSleeper()
    async with (
        receiver() as recv,
        webhooks([hook("ops", recv.url("/status/410"))], sleeper) as (
            service,
            hub,
        ),
    ):
        hub.publish(wake("lab:7361", "waking"))
        await wait_for(lambda: service.describe()[0]["failed"] == 1, 10, "the give-up")
        assert len(recv.requests) == 1
    assert sleeper.delays == []


async def test_429_waits_its_retry_after() -> None:
    sleeper = FakeSleeper()
    async with (
        receiver() as recv,
        webhooks([hook("ops", recv.url("/script/429"), backoff="1s")], sleeper) as (service, hub),
    ):
        hub.publish(wake("lab:7361", "waking"))
        await wait_for(lambda: service.describe()[0]["delivered"] == 1, 10, "the delivery")
        assert len(recv.requests) == 2
    assert sleeper.delays == [7.0]  # the endpoint's Retry-After, not the 1 s backoff


async def test_a_hanging_endpoint_times_out_and_delays_no_other_webhook() -> None:
    async with receiver() as recv:
        hanging = hook("stuck", recv.url("/hang"), timeout="500ms", retries=0)
        fine = hook("fine", recv.url("/ok"))
        async with webhooks([hanging, fine], drain_s=0.1) as (service, hub):
            hub.publish(wake("lab:7361", "waking"))
            await wait_for(lambda: len(recv.on("/ok")) == 1, 10, "the other webhook's delivery")
            # Delivered while the first endpoint still holds its request.
            assert recv.hanging == 1
            stuck, other = service.describe()
            assert other["delivered"] == 1
            await wait_for(lambda: service.describe()[0]["failed"] == 1, 10, "the timeout")
            stuck = service.describe()[0]
    assert stuck["last_error"] == "timed out after 0.5s"


async def test_a_full_queue_drops_and_counts() -> None:
    async with receiver() as recv:
        config = hook("stuck", recv.url("/hang"), timeout="1m", queue=2)
        async with webhooks([config], drain_s=0.1) as (service, hub):
            hub.publish(wake("lab:7361", "waking"))
            await wait_for(lambda: recv.hanging == 1, 10, "the first delivery held")
            for vmid in range(7363, 7367):
                hub.publish(wake(f"lab:{vmid}", "waking"))
            await wait_for(lambda: service.describe()[0]["dropped"] == 2, 10, "two drops")
            status = service.describe()[0]
            assert status["queued"] == 3  # the one held and two waiting
    assert status["delivered"] == status["failed"] == 0


async def test_cluster_degraded_and_recovered_once_each() -> None:
    async with receiver() as recv, webhooks([hook("ops", recv.url("/ok"))]) as (_, hub):
        for state in ("pending", "ok", "ok", "failed", "degraded", "failed", "ok", "ok"):
            hub.publish(poll("lab", state, "connection refused" if state == "failed" else None))
        await wait_for(lambda: len(recv.requests) == 2, 10, "two deliveries")
        # An idle stop, published after: it arrives third, so nothing else was on its way.
        data = {"guest": "lab:7362", "event": "idle_stop", "detail": "shutdown", "at": 1.0}
        hub.publish(Event("idle", data, guest="lab:7362"))
        await wait_for(lambda: len(recv.requests) == 3, 10, "the idle stop")
    bodies = [json.loads(r.body) for r in recv.requests]
    assert [(b["event"], b["state"], b["error"]) for b in bodies] == [
        ("cluster_degraded", "failed", "connection refused"),
        ("cluster_recovered", "ok", None),
        ("idle_stop", "stopped", "shutdown"),
    ]
    assert bodies[0]["cluster"] == "lab"
    assert bodies[0]["guest"] is None


async def test_events_and_guests_filters() -> None:
    async with receiver() as recv:
        only_failures = hook("failures", recv.url("/ok/failures"), events=["wake_failed"])
        only_game = hook("game", recv.url("/ok/game"), guests=["gam*"], events=["wake"])
        async with webhooks([only_failures, only_game]) as (_, hub):
            hub.publish(wake("lab:7361", "waking"))
            hub.publish(wake("lab:7361", "failed", error="startup for container failed"))
            hub.publish(wake("lab:7362", "waking"))
            await wait_for(lambda: len(recv.requests) == 2, 10, "two deliveries")
            # A last one through both: when it has arrived, nothing else is on its way.
            hub.publish(wake("lab:7362", "failed", error="no"))
            await wait_for(lambda: len(recv.requests) == 3, 10, "the last delivery")
    sent = sorted(
        (r.path, json.loads(r.body)["event"], json.loads(r.body)["guest"]) for r in recv.requests
    )
    assert sent == [
        ("/ok/failures", "wake_failed", "lab:7361"),
        ("/ok/failures", "wake_failed", "lab:7362"),
        ("/ok/game", "wake", "lab:7362"),
    ]


async def test_ntfy_headers_and_token() -> None:
    async with receiver() as recv:
        config = hook("phone", recv.url("/ok/pxproxy"), format="ntfy", secret="tk_ntfy_token")
        async with webhooks([config]) as (_, hub):
            hub.publish(wake("lab:7361", "failed", error="startup failed"))
            await wait_for(lambda: len(recv.requests) == 1, 10, "the delivery")
    (request,) = recv.requests
    assert request.headers["Title"] == "wiki (lab:7361) failed to start"
    assert request.headers["Priority"] == "4"
    assert request.headers["Tags"] == "x,pxproxy,wake_failed"
    assert request.headers["Authorization"] == "Bearer tk_ntfy_token"
    assert "X-Pxproxy-Signature" not in request.headers
    assert request.body.decode().splitlines() == [
        "wiki (lab:7361) failed to start",
        "Routes: wiki.test",
        "Node: pve1",
        "Error: startup failed",
    ]


async def test_stop_delivers_what_is_queued() -> None:
    async with receiver() as recv:
        async with webhooks([hook("ops", recv.url("/ok"))]) as (service, hub):
            for vmid in range(7367, 7370):
                hub.publish(wake(f"lab:{vmid}", "waking"))
        # Left the block: the hub closed and stop() returned, within its bound.
        assert sorted(json.loads(r.body)["guest"] for r in recv.requests) == [
            "lab:7367",
            "lab:7368",
            "lab:7369",
        ]
        assert service.describe()[0]["delivered"] == 3


async def test_stop_is_bounded_by_a_hanging_endpoint() -> None:
    async with receiver() as recv:
        config = hook("stuck", recv.url("/hang"), timeout="5m")
        async with webhooks([config], drain_s=0.2) as (service, hub):
            hub.publish(wake("lab:7370", "waking"))
            await wait_for(lambda: recv.hanging == 1, 10, "the delivery held")
            tasks = service.tasks
            assert len(tasks) == 2
        # stop() gave up on it after drain_s, long before its 5 min timeout, and ended the task.
        assert all(task.done() for task in tasks)
        assert service.describe()[0]["queued"] == 0
