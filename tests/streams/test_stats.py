"""/stats/{ref} and /stats/node/{node} against the lab: formats, transports, fan-out, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers.stats import STATS_HUB, setup_stats
from pxproxy.config.models import Config
from pxproxy.daemon import make_poller
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.metrics import Metrics
from pxproxy.streams.stats import StatsHub, Watch

from ..support import lab_cluster, wait_for
from .test_formatting import LINE_RE

TOKEN = "streams-read-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    http: Any  # pytest_aiohttp TestClient
    hub: StatsHub
    lab: LabServer
    metrics: Metrics

    def ended(self, endpoint: str) -> float:
        """How many requests to `endpoint` have ended, answered or cancelled (the API counts
        each when its handler returns or is cancelled, as 499)."""
        return sum(
            sample.value
            for metric in self.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == "pxproxy_api_requests_total"
            and sample.labels.get("endpoint") == endpoint
        )

    def url(self, path: str) -> str:
        return str(self.http.make_url(path))


def lab_config(lab: LabServer) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "reader", "secret": TOKEN, "scopes": ["read"]}]},
        }
    )


@contextlib.asynccontextmanager
async def api(lab: LabServer, aiohttp_client: AiohttpClient) -> AsyncIterator[Api]:
    """The management API over the lab: inventory fed by the daemon's poller, real sockets."""
    config = lab_config(lab)
    inventory, metrics = Inventory(), Metrics()
    poller, client = make_poller("lab", config.proxmox[0], inventory, config, metrics)
    task = asyncio.create_task(poller.run(), name="test-poller")
    http = None
    try:
        want = {g for g in lab.cluster.guests}
        await inventory.wait_until(
            lambda s: "lab" in s.clusters and {g.vmid for g in s.guests} >= want, 15
        )
        ctx = make_context(config, inventory, metrics, True, clients={"lab": client})
        app = build_app(ctx, setup=[setup_stats])
        http = await aiohttp_client(app)
        yield Api(http, app[STATS_HUB], lab, metrics)
    finally:
        if http is not None:
            await http.close()  # app shutdown closes the hub before the Proxmox session
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def add_guests(lab: LabServer) -> None:
    lab.cluster.add_guest(101, "lxc", "wiki", "pve1", status="running", static_ip=True)
    lab.cluster.add_guest(102, "qemu", "db", "pve1", status="running", static_ip=True)


def status_calls(lab: LabServer) -> int:
    return lab.api.count("/status/current")


async def read_lines(resp: aiohttp.ClientResponse, n: int, timeout_s: float = 10) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout_s):
        while len(lines) < n:
            raw = await resp.content.readline()
            assert raw, f"stream ended after {lines}"
            lines.append(raw.decode().rstrip("\n"))
    return lines


async def test_text_stream_one_line_per_second(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/stats/101", headers=AUTH)
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        started = time.monotonic()
        lines = await read_lines(resp, 3)
        elapsed = time.monotonic() - started
        resp.close()
        for line in lines:
            m = LINE_RE.match(line)
            assert m, line
            assert m["status"] == "running"
        # Three samples one second apart: about 2 s from the first to the third.
        assert 1.5 < elapsed < 5, elapsed
        await wait_for(lambda: a.hub.watchers == 0, 10, "the watcher to be released")
        await wait_for(lambda: a.hub.active_feeds == 0, 10, "the feed to end")


async def test_stream_0_answers_one_line(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        for ref in ("wiki", "102", "pve1/101", "lab:102", "qemu/102"):
            resp = await a.http.get(f"/stats/{ref}?stream=0", headers=AUTH)
            assert resp.status == 200, await resp.text()
            text = await resp.text()
            assert text.endswith("\n")
            assert text.count("\n") == 1
            assert LINE_RE.match(text.strip()), text
        assert a.hub.watchers == 0


async def test_ndjson_fields_and_rates(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/stats/wiki?format=json", headers=AUTH)
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        first, second = (json.loads(x) for x in await read_lines(resp, 2))
        resp.close()
        for obj in (first, second):
            assert obj["vmid"] == 101
            assert obj["ref"] == "lab:101" or obj["ref"].endswith("101")
            assert obj["status"] == "running"
            assert 0 <= obj["cpu"] <= 1
            assert obj["maxmem"] > 0
            assert obj["mem"] > 0
            for key in ("netin", "netout", "diskread", "diskwrite", "uptime"):
                assert isinstance(obj[key], int), key
        assert second["time"] > first["time"]
        # The lab's disk counters grow while running: the second sample has real rates.
        assert second["diskread_rate"] is not None
        assert second["diskread_rate"] > 0
        assert second["netin_rate"] is not None


async def test_sse(lab_server: LabServer, aiohttp_client: AiohttpClient) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/stats/101", headers={**AUTH, "Accept": "text/event-stream"})
        assert resp.status == 200
        assert resp.content_type == "text/event-stream"
        lines = await read_lines(resp, 6)
        resp.close()
        assert lines[0] == "event: stats"
        assert lines[1].startswith("data: ")
        assert LINE_RE.match(lines[1].removeprefix("data: "))
        assert lines[2] == ""
        assert lines[3:5] == ["event: stats", lines[4]]
        await wait_for(lambda: a.hub.watchers == 0, 10, "the SSE watcher to be released")


async def test_websocket(lab_server: LabServer, aiohttp_client: AiohttpClient) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        async with a.http.ws_connect("/stats/102?format=json", headers=AUTH) as ws:
            got = []
            for _ in range(2):
                msg = await asyncio.wait_for(ws.receive(), 10)
                assert msg.type == aiohttp.WSMsgType.TEXT
                got.append(json.loads(msg.data))
            assert [g["vmid"] for g in got] == [102, 102]
            assert a.hub.watchers == 1
        await wait_for(lambda: a.hub.watchers == 0, 10, "the WebSocket watcher to be released")
        async with a.http.ws_connect("/stats/101?stream=0", headers=AUTH) as ws:
            msg = await asyncio.wait_for(ws.receive(), 10)
            assert LINE_RE.match(msg.data)
            closing = await asyncio.wait_for(ws.receive(), 10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_fan_out_100_watchers_one_call_per_second(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        before = status_calls(lab_server)
        started = time.monotonic()

        async def watch() -> list[str]:
            resp = await a.http.get("/stats/101", headers=AUTH)
            assert resp.status == 200
            try:
                return await read_lines(resp, 3, timeout_s=20)
            finally:
                resp.close()

        results = await asyncio.gather(*(watch() for _ in range(100)))
        await wait_for(lambda: a.hub.active_feeds == 0, 10, "the feed to end")
        seconds = time.monotonic() - started
        calls = status_calls(lab_server) - before
        assert all(len(r) == 3 and all(LINE_RE.match(x) for x in r) for r in results)
        assert calls <= seconds + 2, (calls, seconds)
        assert calls >= 3  # each watcher saw 3 distinct samples
        # Nobody watching costs nothing: no poll task is left that could make another call.
        await wait_for(lambda: a.hub.polling_tasks == 0, 10, "the poll task to end")


async def test_bad_requests_and_unknown_guests(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    lab_server.cluster.add_guest(103, "lxc", "twin", "pve1", status="running", static_ip=True)
    lab_server.cluster.add_guest(104, "lxc", "twin", "pve1", status="running", static_ip=True)
    async with api(lab_server, aiohttp_client) as a:
        for query, param in (
            ("stream=2", "stream"),
            ("format=xml", "format"),
            ("colour=1", "colour"),
        ):
            resp = await a.http.get(f"/stats/101?{query}", headers=AUTH)
            assert resp.status == 400, query
            body = await resp.json()
            assert body["parameter"] == param
            assert param in body["detail"]
        resp = await a.http.get("/stats/999?stream=0", headers=AUTH)
        assert resp.status == 404
        assert "999" in (await resp.json())["detail"]
        resp = await a.http.get("/stats/twin?stream=0", headers=AUTH)
        assert resp.status == 409
        assert {c["vmid"] for c in (await resp.json())["candidates"]} == {103, 104}
        resp = await a.http.get("/stats/101?stream=0")
        assert resp.status == 401
        resp = await a.http.get("/stats/node/nosuch", headers=AUTH)
        assert resp.status == 404
        assert status_calls(lab_server) == 0  # nothing reached Proxmox for any of these


async def test_offline_node_is_a_problem_then_errors_are_events(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        lab_server.set_node_offline("pve1")
        resp = await a.http.get("/stats/101?stream=0", headers=AUTH)
        assert resp.status == 503
        assert "unreachable" in (await resp.json())["detail"]
        lab_server.set_node_offline("pve1", False)
        resp = await a.http.get("/stats/101", headers=AUTH)
        assert resp.status == 200
        assert LINE_RE.match((await read_lines(resp, 1))[0])
        lab_server.set_node_offline("pve1")
        async with asyncio.timeout(10):
            while not (line := (await read_lines(resp, 1))[0]).startswith("error: "):
                pass
        assert "unreachable" in line
        calls_when_failing = status_calls(lab_server)
        lab_server.set_node_offline("pve1", False)
        async with asyncio.timeout(20):  # backoff: 2 s, then 4 s, ...
            while not LINE_RE.match((await read_lines(resp, 1, 20))[0]):
                pass
        resp.close()
        # Backing off: while failing, far fewer than one call per second.
        assert status_calls(lab_server) - calls_when_failing <= 4


async def test_node_stats(lab_server: LabServer, aiohttp_client: AiohttpClient) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/stats/node/pve1?stream=0", headers=AUTH)
        assert resp.status == 200
        assert resp.content_type == "application/x-ndjson"
        one = json.loads(await resp.text())
        assert one["node"] == "pve1"
        assert 0 <= one["cpu"] <= 1
        assert one["memory"]["total"] > one["memory"]["used"] > 0
        assert one["rootfs"]["total"] > 0
        assert len(one["loadavg"]) == 3
        assert all(isinstance(x, float) for x in one["loadavg"])
        assert one["uptime"] >= 0
        assert one["pveversion"].startswith("pve-manager/")
        assert one["kversion"].startswith("Linux")
        before = lab_server.api.count("/nodes/pve1/status")
        resp = await a.http.get("/stats/node/pve1", headers=AUTH)
        samples = [json.loads(x) for x in await read_lines(resp, 2)]
        resp.close()
        assert [s["node"] for s in samples] == ["pve1", "pve1"]
        assert samples[1]["time"] > samples[0]["time"]
        await wait_for(lambda: a.hub.active_feeds == 0, 10, "the node feed to end")
        assert lab_server.api.count("/nodes/pve1/status") - before <= 3


async def test_app_shutdown_ends_open_streams_at_once(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        stats = await a.http.get("/stats/101", headers=AUTH)
        journal = await a.http.get("/journal/pve1?limit=1", headers=AUTH)
        await read_lines(stats, 1)
        await read_lines(journal, 1)
        started = time.monotonic()
        await a.http.close()  # on_shutdown closes the hub and stops journal followers
        assert time.monotonic() - started < 5  # not aiohttp's 60 s handler grace period
        assert a.hub.active_feeds == 0
        assert a.hub.watchers == 0


async def test_shutdown_ends_each_stream_with_a_final_word(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        text = await a.http.get("/stats/101", headers=AUTH)
        ndjson = await a.http.get("/stats/101?format=json", headers=AUTH)
        sse = await a.http.get("/stats/101", headers={**AUTH, "Accept": "text/event-stream"})
        ws = await a.http.ws_connect("/stats/101", headers=AUTH)
        journal = await a.http.get("/journal/pve1?limit=1", headers=AUTH)
        for resp in (text, ndjson, sse, journal):
            await read_lines(resp, 1)
        await ws.receive(timeout=10)
        ws_end = asyncio.create_task(ws.receive())
        # The server side alone, so that the client can still read what it was sent.
        closing = asyncio.create_task(a.http.server.close())
        async with asyncio.timeout(5):
            text_rest = (await text.read()).decode().splitlines()
            ndjson_rest = (await ndjson.read()).decode().splitlines()
            sse_rest = (await sse.read()).decode()
            journal_rest = (await journal.read()).decode().splitlines()
            msg = await ws_end
            await closing
    assert text_rest[-1] == "error: pxproxy is stopping"
    last = json.loads(ndjson_rest[-1])
    assert (last["error"], last["status"]) == ("pxproxy is stopping", 503)
    assert sse_rest.endswith("event: end\ndata: error: pxproxy is stopping\n\n")
    assert journal_rest[-1] == "error: pxproxy is stopping"
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.GOING_AWAY


async def test_streams_that_come_and_go_leave_nothing_for_the_cyclic_gc(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    """With the cyclic gc off, every stream's Watch and poll task are freed once its client
    hung up: nothing per stream sits in a reference cycle (its memory would wait for a gc)."""
    add_guests(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        gc.collect()
        gc.disable()
        try:
            for _ in range(20):
                async with a.http.ws_connect("/stats/101", headers=AUTH) as ws:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.TEXT
                for headers in (AUTH, {**AUTH, "Accept": "text/event-stream"}):
                    resp = await a.http.get("/stats/101", headers=headers)
                    assert resp.status == 200
                    assert await resp.content.readline()
                    resp.close()
            await wait_for(lambda: a.hub.watchers == 0, 10, "every watcher released")
            await wait_for(lambda: not a.hub._tasks, 10, "the poll task to end")
            left = [
                o
                for o in gc.get_objects()
                if isinstance(o, Watch)
                or (isinstance(o, asyncio.Task) and o.get_name().startswith("stats:"))
            ]
        finally:
            gc.enable()
        assert left == []
