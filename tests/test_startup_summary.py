"""The start-up summary: how routes and clusters are described, and each cluster's line
logged once its first poll has answered (not before, not twice)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveConnectionError
from pxproxy.startup_summary import ClusterSummaries, cluster_line, route_line

from .builders import make_guest, make_node
from .support import wait_for


def test_route_lines_name_target_and_idle_settings() -> None:
    http = RouteConfig.model_validate(
        {
            "host": ["wiki.example.com", "w.example.com"],
            "guest": "wiki",
            "port": 8080,
            "idle": {"timeout": "10m", "wake_timeout": "2m", "depends_on": ["db"]},
        }
    )
    assert route_line(http) == (
        "route wiki.example.com,w.example.com -> wiki:8080, idle-watch: shutdown after 600s"
        " idle, wake_timeout 120s, depends on db"
    )
    tcp = RouteConfig.model_validate(
        {"listen": "0.0.0.0:2222", "guest": "home:105", "port": 22, "scheme": "http"}
    )
    assert route_line(tcp) == "route tcp:0.0.0.0:2222 -> home:105:22, always on"


def test_the_cluster_line_counts_nodes_and_guests() -> None:
    cluster = ClusterSnapshot.build(
        "home",
        [make_guest(100, "a", status="running"), make_guest(101, "b", status="stopped")],
        [make_node("pve1"), make_node("pve2", status="offline")],
    )
    assert cluster_line(cluster, "8.4.14") == (
        "cluster home: PVE 8.4.14, 2 nodes (pve1, pve2 (offline)), 2 guests (1 running)"
    )


class FakeVersion:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def version(self) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise PveConnectionError("connection refused")
        return {"version": "8.4.14", "release": "8.4"}


async def test_each_cluster_is_logged_once_after_its_first_answered_poll(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "pxproxy.startup")
    inventory = Inventory()
    home, lab = FakeVersion(), FakeVersion(fail=True)
    summaries = ClusterSummaries(inventory, {"home": home, "lab": lab})
    summaries.start()
    try:
        # A failed first poll has no data to summarise: nothing yet.
        inventory.publish(ClusterSnapshot("home", (), (), ok=False, error="refused"))
        home_ok = ClusterSnapshot.build(
            "home", [make_guest(100, "a", status="stopped")], [make_node("pve1")]
        )
        inventory.publish(home_ok)
        await wait_for(lambda: len(caplog.records) == 1, 5, "the home line")
        inventory.publish(ClusterSnapshot.build("lab", [], [], last_success=None))
        await wait_for(lambda: len(caplog.records) == 2, 5, "the lab line")
        inventory.publish(home_ok.failed("later failure"))
        inventory.publish(ClusterSnapshot.build("home", [], []))
    finally:
        await summaries.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "cluster home: PVE 8.4.14, 1 node (pve1), 1 guest (0 running)",
        "cluster lab: PVE version unknown (connection refused), 0 nodes (none visible),"
        " 0 guests (0 running)",
    ]
    assert caplog.records[0].__dict__["cluster"] == "home"
    assert (home.calls, lab.calls) == (1, 1)
