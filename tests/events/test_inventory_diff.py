"""The diff of two snapshots of one cluster: which guests changed, which went, and the
`poll`, `stats` and `guests` events a publish makes."""

from __future__ import annotations

import json

from pxproxy.api.handlers._common import guest_json
from pxproxy.events.inventory_diff import cluster_events, guest_changes
from pxproxy.inventory.snapshot import ClusterSnapshot

from ..builders import make_guest, make_node

WIKI = make_guest(101, "wiki", ips=("10.0.0.5",), tags=("web",))
DB = make_guest(102, "db", kind="qemu", status="stopped")
NODES = (make_node("pve"),)


def snap(*guests: object) -> ClusterSnapshot:
    return ClusterSnapshot.build("home", guests, NODES)  # type: ignore[arg-type]


def test_the_first_snapshot_has_every_guest_as_changed() -> None:
    changes = guest_changes(None, snap(WIKI, DB))
    assert changes.changed == (WIKI, DB)
    assert changes.removed == ()


def test_counters_alone_are_no_change() -> None:
    busy = WIKI._replace(cpu=0.7, mem=123456, uptime=999, netin=5, netout=6, disk=7)
    assert not guest_changes(snap(WIKI, DB), snap(busy, DB))


def test_status_ips_name_tags_are_changes_and_gone_guests_are_removed() -> None:
    before = snap(WIKI, DB)
    started = DB._replace(status="running")
    readdressed = WIKI._replace(ips=("10.0.0.9",))
    changes = guest_changes(before, snap(readdressed, started))
    assert changes.changed == (readdressed, started)
    renamed = WIKI._replace(name="docs", tags=("web", "prod"))
    assert guest_changes(before, snap(renamed)).changed == (renamed,)
    assert guest_changes(before, snap(renamed)).removed == ("home:102",)
    new = make_guest(103, "new")
    assert guest_changes(before, snap(WIKI, DB, new)).changed == (new,)


def test_a_failed_poll_shares_the_data_and_changes_nothing() -> None:
    before = snap(WIKI, DB)
    assert not guest_changes(before, before.failed("connection refused"))
    assert not guest_changes(before, before.held("too many rejected"))


def test_events_of_a_good_poll() -> None:
    before = snap(WIKI, DB)
    started = DB._replace(status="running", cpu=0.25, mem=512, maxmem=1024)
    events = cluster_events(before, snap(WIKI, started), at=1000.0)
    assert [e.kind for e in events] == ["poll", "stats", "guests"]
    poll, stats, guests = (json.loads(e.json()) for e in events)
    assert poll == {
        "cluster": "home",
        "ok": True,
        "state": "ok",
        "error": None,
        "guests": 2,
        "nodes": 1,
        "at": 1000.0,
    }
    # Running guests only, by cluster:vmid.
    assert stats == {
        "cluster": "home",
        "at": 1000.0,
        "guests": {
            "home:101": {"cpu": WIKI.cpu, "mem": WIKI.mem, "maxmem": WIKI.maxmem},
            "home:102": {"cpu": 0.25, "mem": 512, "maxmem": 1024},
        },
    }
    # Each guest exactly as GET /api/v1/guests gives it.
    assert guests == {
        "cluster": "home",
        "changed": [json.loads(guest_json(started))],
        "removed": [],
        "at": 1000.0,
    }
    assert all(e.guest is None for e in events)


def test_a_failed_poll_says_so_and_sends_no_stale_stats() -> None:
    before = snap(WIKI, DB)
    events = cluster_events(before, before.failed("connection refused"), at=5.0)
    assert [e.kind for e in events] == ["poll"]
    assert events[0].data["ok"] is False
    assert events[0].data["state"] == "failed"
    assert events[0].data["error"] == "connection refused"
    held = cluster_events(before, before.held("too many rejected"), at=5.0)
    assert [e.kind for e in held] == ["poll"]
    assert held[0].data["state"] == "degraded"


def test_a_counter_only_poll_has_no_guests_event() -> None:
    before = snap(WIKI, DB)
    events = cluster_events(before, snap(WIKI._replace(cpu=0.9), DB), at=5.0)
    assert [e.kind for e in events] == ["poll", "stats"]


def test_the_events_fit_the_api_models_of_the_openapi_document() -> None:
    from pxproxy.api.models import EVENTS

    before = snap(WIKI, DB)
    events = [
        *cluster_events(None, before, at=1.0),
        *cluster_events(before, snap(WIKI._replace(status="stopped")), at=2.0),
        *cluster_events(before, before.failed("refused"), at=3.0),
    ]
    assert {e.kind for e in events} == {"poll", "stats", "guests"}
    for event in events:
        EVENTS[event.kind].model_validate_json(event.json())
