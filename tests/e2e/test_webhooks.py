"""Webhooks through the daemon against the lab: a request wakes a sleeping guest, and a signed
`wake`, then `ready`, then (once it idles) `idle_stop` reach a real endpoint; GET
/api/v1/webhooks counts them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pxproxy.config.loader import load_config
from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.webhooks.signing import verify

from ..support import lab_cluster, wait_for
from ..webhooks.receiver import receiver
from ..webhooks.support import wake

# vmid 7361: used by no other test (the lab derives guest addresses from vmids).
WIKI, GAME = 7361, 7362
TOKEN = "webhooks-test-token-0123"
SECRET = "e2e-webhook-secret"


async def test_a_wake_sends_wake_ready_and_idle_stop(lab_server: LabServer) -> None:
    lab_server.cluster.add_guest(WIKI, "lxc", "wiki", "pve1", boot_time_s=0.2, static_ip=True)
    async with receiver() as recv:
        config = Config.model_validate(
            {
                "proxmox": [lab_cluster(lab_server)],
                "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
                "api": {"tokens": [{"name": "t", "secret": TOKEN}]},
                "routes": [
                    {
                        "host": "wiki.test",
                        "guest": f"lab:{WIKI}",
                        "port": 8080,
                        "idle": {"timeout": "1s", "wake_timeout": "10s", "shutdown_timeout": "2s"},
                    }
                ],
                "webhooks": [
                    {
                        "name": "ops",
                        "url": recv.url("/ok/hook"),
                        "secret": SECRET,
                        "events": ["wake", "ready", "idle_stop"],
                    }
                ],
            }
        )
        daemon = Daemon(config)
        await daemon.start()
        try:
            await wait_for(
                lambda: all(p.first_cycle.is_set() for p in daemon.pollers), 10, "a poll"
            )
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
                session.get(
                    f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": "wiki.test"}
                ) as resp,
            ):
                assert resp.status == 200, await resp.text()
            await wait_for(lambda: len(recv.requests) >= 2, 10, "wake and ready")
            await wait_for(lambda: len(recv.requests) >= 3, 15, "the idle stop")
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://127.0.0.1:{daemon.api_port}/api/v1/webhooks",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                ) as resp,
            ):
                listed = await resp.json()
        finally:
            await daemon.stop()
    bodies = [json.loads(r.body) for r in recv.requests]
    assert [b["event"] for b in bodies] == ["wake", "ready", "idle_stop"]
    for request, body in zip(recv.requests, bodies, strict=True):
        headers = request.headers
        assert verify(
            SECRET, headers["X-Pxproxy-Timestamp"], request.body, headers["X-Pxproxy-Signature"]
        )
        assert (body["guest"], body["name"], body["cluster"]) == (f"lab:{WIKI}", "wiki", "lab")
    assert bodies[0]["routes"] == ["wiki.test"]
    assert bodies[1]["state"] == "ready"
    (status,) = listed
    assert (status["name"], status["delivered"], status["failed"]) == ("ops", 3, 0)
    assert status["host"] == f"127.0.0.1:{recv.port}"


async def test_a_reload_replaces_the_webhooks_and_keeps_their_counts(
    lab_server: LabServer, tmp_path: Path
) -> None:
    async with receiver() as recv:
        config: dict[str, Any] = {
            "proxmox": [lab_cluster(lab_server)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "webhooks": [{"name": "ops", "url": recv.url("/ok/old")}],
        }
        path = tmp_path / "pxproxy.yml"
        path.write_text(yaml.safe_dump(config))
        daemon = Daemon(load_config(str(path)), config_path=path)
        await daemon.start()
        try:
            # Published onto the daemon's own hub: these test the webhooks, not idle-watch.
            daemon.events.publish(wake(f"lab:{GAME}", "waking"))
            await wait_for(lambda: len(recv.on("/ok/old")) == 1, 10, "the first delivery")
            config["webhooks"] = [{"name": "ops", "url": recv.url("/ok/new"), "format": "ntfy"}]
            path.write_text(yaml.safe_dump(config))
            assert await daemon.reload()
            assert "webhooks" not in daemon.config_status().restart_needed
            daemon.events.publish(wake(f"lab:{GAME}", "ready"))
            await wait_for(lambda: len(recv.on("/ok/new")) == 1, 10, "the delivery after it")
            (status,) = daemon.webhooks.describe()
        finally:
            await daemon.stop()
    assert len(recv.requests) == 2  # nothing twice, nothing to the old URL after the reload
    # The wake began before the reload and ended after it: still a `ready`, now in ntfy.
    assert recv.on("/ok/new")[0].headers["Title"] == f"lab:{GAME} is ready"
    assert (status["format"], status["delivered"]) == ("ntfy", 2)
