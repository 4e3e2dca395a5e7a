"""GET /api/v1/events on the daemon against the lab: poll events, a guest started in the lab
as a `guests` change, a wake through the API as wake events waking -> ready, and any number of
open streams costing no extra Proxmox call."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for

# vmids 7301-7319 are this file's (the lab derives guest addresses from vmids).
RUNNING, SLEEPER, LATE = 7301, 7302, 7303
TOKEN = "events-e2e-token-0123456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAMS = 20


def config(lab: LabServer, **cluster: Any) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab, **cluster)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "power"]}]},
            "routes": [
                {
                    "host": "sleeper.events.test",
                    "guest": f"lab:{SLEEPER}",
                    "port": 8080,
                    "idle": {"timeout": "1h", "wake_timeout": "20s"},
                }
            ],
        }
    )


@contextlib.asynccontextmanager
async def running(lab: LabServer, **cluster: Any) -> AsyncIterator[Daemon]:
    daemon = Daemon(config(lab, **cluster))
    await daemon.start()
    try:
        await wait_for(lambda: all(p.first_cycle.is_set() for p in daemon.pollers), 10, "a poll")
        yield daemon
    finally:
        await daemon.stop()


class Stream:
    """One open GET /api/v1/events, read message by message."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.received: list[tuple[str, Any]] = []

    async def next(self) -> tuple[str, Any]:
        lines: list[str] = []
        while True:
            raw = await self.resp.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line:
                lines.append(line)
            elif lines and not lines[0].startswith(":"):
                break
            else:
                lines = []  # a comment (keep-alive)
        kind = lines[0].removeprefix("event: ")
        data = json.loads(lines[1].removeprefix("data: "))
        self.received.append((kind, data))
        return kind, data

    async def until(self, kind: str, test: Any = lambda data: True, timeout_s: float = 15) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                got, data = await self.next()
                if got == kind and test(data):
                    return data


async def open_stream(session: aiohttp.ClientSession, daemon: Daemon) -> Stream:
    resp = await session.get(f"http://127.0.0.1:{daemon.api_port}/api/v1/events", headers=AUTH)
    assert resp.status == 200, await resp.text()
    stream = Stream(resp)
    kind, hello = await asyncio.wait_for(stream.next(), 10)
    assert kind == "hello"
    assert hello["clusters"] == ["lab"]
    return stream


async def test_polls_a_started_guest_and_a_wake_as_events(lab_server: LabServer) -> None:
    lab = lab_server.cluster
    lab.add_guest(RUNNING, "lxc", "ev-running", "pve1", status="running", static_ip=True)
    lab.add_guest(SLEEPER, "lxc", "ev-sleeper", "pve1", static_ip=True, boot_time_s=0.2)
    lab.add_guest(LATE, "lxc", "ev-late", "pve1", static_ip=True)
    await lab.open()
    async with (
        running(lab_server) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
    ):
        stream = await open_stream(session, daemon)
        poll = await stream.until("poll", lambda d: d["cluster"] == "lab")
        assert (poll["ok"], poll["state"], poll["error"]) == (True, "ok", None)
        assert poll["guests"] == 3
        stats = await stream.until("stats")
        assert f"lab:{RUNNING}" in stats["guests"]
        assert f"lab:{LATE}" not in stats["guests"]  # stopped: no figures

        # A guest started in the lab, outside pxproxy: a `guests` change at the next poll.
        lab.start(LATE)
        changed = await stream.until(
            "guests",
            lambda d: any(g["vmid"] == LATE and g["status"] == "running" for g in d["changed"]),
        )
        entry = next(g for g in changed["changed"] if g["vmid"] == LATE)
        async with session.get(
            f"http://127.0.0.1:{daemon.api_port}/api/v1/guests/lab:{LATE}", headers=AUTH
        ) as resp:
            listed = await resp.json()
        assert set(entry) == set(listed)  # the guest object GET /api/v1/guests gives
        assert {k: entry[k] for k in ("id", "name", "node", "type")} == {
            k: listed[k] for k in ("id", "name", "node", "type")
        }

        # A wake of the sleeping guest through the API: waking ... ready on the stream.
        async with session.post(
            f"http://127.0.0.1:{daemon.api_port}/api/v1/guests/lab:{SLEEPER}/wake", headers=AUTH
        ) as resp:
            assert resp.status == 200
            lines = [json.loads(line) async for line in resp.content if line.strip()]
        assert lines[-1]["state"] == "ready", lines
        waking = await stream.until("wake", lambda d: d["state"] == "waking")
        assert waking["guest"] == f"lab:{SLEEPER}"
        assert waking["routes"] == ["sleeper.events.test"]
        ready = await stream.until("wake", lambda d: d["state"] == "ready")
        assert ready["guest"] == f"lab:{SLEEPER}"
        assert ready["error"] is None
        states = [d["state"] for k, d in stream.received if k == "wake"]
        assert states.index("waking") < states.index("ready")
        stream.resp.close()


async def test_twenty_open_streams_cost_no_extra_proxmox_call(lab_server: LabServer) -> None:
    lab = lab_server.cluster
    lab.add_guest(RUNNING, "lxc", "ev-running", "pve1", status="running", static_ip=True)
    lab.add_guest(SLEEPER, "lxc", "ev-sleeper", "pve1", static_ip=True)
    await lab.open()
    # Nothing else comes due in the measured windows: each poll is one /cluster/resources.
    quiet = {"ip_refresh": "1h", "node_refresh": "1h", "notes_refresh": "1h"}
    async with (
        running(lab_server, **quiet) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
    ):
        poller = daemon.pollers[0]
        requests = lab_server.api.requests

        async def calls_over(polls: int) -> tuple[int, int]:
            """(Proxmox requests, polls) from one finished poll to `polls` later."""
            start = poller.stats.cycles
            await wait_for(lambda: poller.stats.cycles > start, 10, "a poll to end")
            begin, first = len(requests), poller.stats.cycles
            await wait_for(lambda: poller.stats.cycles >= first + polls, 20, f"{polls} polls")
            return len(requests) - begin, poller.stats.cycles - first

        alone, alone_polls = await calls_over(5)
        streams = [await open_stream(session, daemon) for _ in range(STREAMS)]
        assert daemon.events.subscribers == STREAMS
        published = daemon.events.published
        shared, shared_polls = await calls_over(5)
        assert alone_polls == shared_polls == 5
        assert shared / shared_polls <= alone / alone_polls, (alone, shared)
        assert daemon.events.published > published
        # Every stream was live meanwhile: each got the polls.
        for stream in streams:
            await stream.until("poll", lambda d: d["cluster"] == "lab")
        for stream in streams:
            stream.resp.close()


async def test_open_streams_end_cleanly_when_the_daemon_stops(lab_server: LabServer) -> None:
    daemon = Daemon(config(lab_server))
    await daemon.start()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        try:
            streams = [await open_stream(session, daemon) for _ in range(3)]
        finally:
            await daemon.stop()
        for stream in streams:
            rest = await asyncio.wait_for(stream.resp.content.read(), 10)
            # Whatever was queued, then the last word, then the end of the body.
            assert rest.endswith(b": pxproxy is stopping\n\n"), rest[-200:]
        assert daemon.events.subscribers == 0
