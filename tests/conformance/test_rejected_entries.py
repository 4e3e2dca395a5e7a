"""Malformed /cluster/resources entries from a real HTTPS Proxmox (the lab), through the daemon's
own poller wiring: rejected and counted, the last good data kept and shown degraded in /health,
and the recovery logged once the entries are well formed again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.metrics import Metrics

from ..support import lab_cluster, wait_for

VMIDS = (760, 761, 762)  # used by no other test: the lab derives addresses from vmids


def lab_config(lab: LabServer) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab, poll_interval="100ms", ips={})],
        }
    )


class Corrupter:
    """Wraps the lab's /cluster/resources data: while `on`, the guests' entries go bad the ways
    the attack review found (a vmid in words, a number for a name, a duplicate, a huge vmid)."""

    def __init__(self, lab: LabServer) -> None:
        self._resources = lab.cluster.resources
        self.on = False

    def __call__(self, type: str | None = None) -> list[dict[str, Any]]:
        entries = self._resources(type)
        if not self.on:
            return entries
        out = []
        for e in entries:
            if e.get("vmid") == 760:
                e = {**e, "vmid": "seven hundred sixty"}
            elif e.get("vmid") == 761:
                e = {**e, "name": 5}
            elif e.get("vmid") == 762:
                out.append({**e, "vmid": 99999999999999999999})
            out.append(e)
        out.append({**entries[-1]})  # a duplicate of the last guest entry
        return out


def rejected_total(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "pxproxy_poll_entries_rejected":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


async def test_bad_entries_rejected_counted_last_good_kept_recovery_logged(
    lab_server: LabServer,
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lab_server.cluster.add_guest(VMIDS[0], "lxc", "alpha", "pve1")
    lab_server.cluster.add_guest(VMIDS[1], "qemu", "beta", "pve1")
    lab_server.cluster.add_guest(VMIDS[2], "lxc", "gamma", "pve1")
    corrupter = Corrupter(lab_server)
    monkeypatch.setattr(lab_server.cluster, "resources", corrupter)
    config = lab_config(lab_server)
    inventory, metrics = Inventory(), Metrics()
    metrics.watch_inventory(lambda: inventory.snapshot, config.cluster_names)
    poller, client = make_poller("lab", config.proxmox[0], inventory, config, metrics)
    api = await aiohttp_client(build_app(make_context(config, inventory, metrics, True)))
    task = asyncio.create_task(poller.run(), name="test-poller")
    caplog.set_level(logging.INFO, "pxproxy.inventory")
    try:
        await inventory.wait_until(
            lambda s: "lab" in s.clusters and {g.vmid for g in s.guests} == set(VMIDS), 15
        )
        assert (await (await api.get("/health")).json())["status"] == "ok"

        corrupter.on = True
        await inventory.wait_until(lambda s: s.clusters["lab"].state == "degraded", 15)
        health = await (await api.get("/health")).json()
        assert health["status"] == "degraded"
        (lab,) = health["clusters"]
        assert (lab["ok"], lab["state"], lab["guests"]) == (False, "degraded", 3)
        assert lab["error"].startswith("2 of 3 guests would vanish because 4 /cluster/resources")
        # The last good data is still what lookups see.
        snap = inventory.snapshot
        assert sorted(g.name for g in snap.guests) == ["alpha", "beta", "gamma"]
        assert snap.lookup_ref("lab:760").guests[0].name == "alpha"
        metrics_text = await (await api.get("/metrics")).text()
        assert rejected_total(metrics_text) >= 4
        warned = {r.getMessage() for r in caplog.records if r.levelno == logging.WARNING}
        assert {
            "cluster lab: /cluster/resources entry lxc/760 rejected: "
            "vmid 'seven hundred sixty' is not an integer",
            "cluster lab: /cluster/resources entry qemu/761 rejected: name 5 is not a string",
            f"cluster lab: /cluster/resources entry lxc/762 rejected: vmid {99999999999999999999}"
            " is outside 100..999999999",
            "cluster lab: /cluster/resources entry lxc/762 rejected: duplicate id",
        } <= warned

        polls = lab_server.api.count("/cluster/resources")
        await wait_for(
            lambda: lab_server.api.count("/cluster/resources") >= polls + 2,
            what="polling to go on while degraded",
        )
        assert inventory.snapshot.clusters["lab"].state == "degraded"

        corrupter.on = False
        await inventory.wait_until(lambda s: s.clusters["lab"].state == "ok", 15)
        await wait_for(
            lambda: any("recovered" in r.getMessage() for r in caplog.records),
            what="the recovery to be logged",
        )
        assert (await (await api.get("/health")).json())["status"] == "ok"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()
    recovered = [
        r for r in caplog.records if r.levelno == logging.INFO and "recovered" in r.getMessage()
    ]
    assert len(recovered) == 1
    assert recovered[0].getMessage().startswith("cluster lab: recovered")
