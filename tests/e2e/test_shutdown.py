"""SIGTERM while everything long-lived is open: the daemon drains, ends each exchange with its
proper last word, closes the remote shells and exits 0 within the grace period."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for
from .daemon_process import running_daemon

pytestmark = pytest.mark.slow

CT = 8851  # journal follow and exec run in it
WEB = 8852  # serves the proxied WebSocket and SSE stream
SLEEPY = 8853  # stopped; its start takes long enough to be in flight at SIGTERM
TOKEN = "shutdown-test-token-0123"
GRACE_S = 3.0
STOPPING = "pxproxy is stopping"


def write_config(path: Path, lab: LabServer, grace_s: float = GRACE_S) -> None:
    cluster = lab_cluster(lab, username="root@pam", password=lab.credentials.root_password)
    config = {
        "proxmox": [cluster],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "shutdown_grace": grace_s,
        "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "exec", "power"]}]},
        "routes": [
            {"host": "web.test", "guest": f"lab:{WEB}", "port": 8080},
            {
                "host": "sleepy.test",
                "guest": f"lab:{SLEEPY}",
                "port": 8080,
                "idle": {"timeout": "10m", "wake_timeout": "2m"},
            },
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def read_all(resp: aiohttp.ClientResponse) -> str:
    """The whole body; raises if the daemon cut it instead of ending it."""
    return (await resp.read()).decode()


async def test_sigterm_drains_every_long_exchange_and_exits_0(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    lab.cluster.add_guest(CT, "lxc", "shut-ct", "pve1", status="running")
    lab.cluster.add_guest(WEB, "lxc", "shut-web", "pve1", status="running")
    lab.cluster.add_guest(SLEEPY, "lxc", "shut-sleepy", "pve1", boot_time_s=60.0)
    await lab.cluster.open()
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab)

    async with (
        running_daemon(config) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        await daemon.wait_listening("api", "proxy")
        api = f"http://127.0.0.1:{daemon.ports['api']}"
        proxy = f"http://127.0.0.1:{daemon.ports['proxy']}"

        async def inventory_ready() -> bool:
            async with http.get(f"{api}/api/v1/routes", headers=auth()) as resp:
                routes = await resp.json()
            async with http.get(f"{api}/api/v1/guests", headers=auth()) as resp:
                guests = await resp.json()
            states = {r["state"] for r in routes}
            return states == {"ready", "asleep"} and len(guests) == len(lab.cluster.guests)

        await wait_for(inventory_ready, 15, "the first poll")

        # A journal that follows, and an exec that would run a minute.
        journal = await http.get(f"{api}/journal/pve1/{CT}", headers=auth())
        assert journal.status == 200
        exec_task = asyncio.create_task(
            http.post(
                f"{api}/exec/pve1/{CT}?format=json",
                json={"argv": ["sleep", "60"], "timeout": 120},
                headers=auth(),
            )
        )
        # Through the proxy: a WebSocket, an event stream, and a request held for a wake.
        ws = await http.ws_connect(f"{proxy}/ws", headers={"Host": "web.test"})
        await ws.send_str("ping")
        assert (await ws.receive(timeout=10)).data == "ping"
        # A live client reads all the time, which is how it answers a close frame.
        ws_end = asyncio.create_task(ws.receive())
        sse = await http.get(f"{proxy}/sse", headers={"Host": "web.test"})
        assert sse.status == 200
        await asyncio.wait_for(sse.content.readline(), 10)
        held = asyncio.create_task(http.get(f"{proxy}/", headers={"Host": "sleepy.test"}))
        await wait_for(
            lambda: any(t.id == str(SLEEPY) and t.type.endswith("start") for t in lab.tasks),
            10,
            "the wake's start task",
        )
        await wait_for(lambda: lab.consoles.open_sessions == 2, 10, "both shells open")

        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(daemon.finish(), GRACE_S + 2)
        except TimeoutError:
            pytest.fail(f"still running {GRACE_S + 2}s after SIGTERM:\n{daemon.text}")
        elapsed = time.monotonic() - started

        assert daemon.proc.returncode == 0, daemon.text
        assert elapsed < GRACE_S + 2

        # The follow journal: a final line, then a clean end of the body.
        body = await asyncio.wait_for(read_all(journal), 5)
        assert body.rstrip("\n").endswith(f"[error: {STOPPING}; the command was interrupted]")
        # The exec: an NDJSON error record instead of an exit status.
        resp = await asyncio.wait_for(exec_task, 5)
        lines = [json.loads(x) for x in (await read_all(resp)).splitlines()]
        assert resp.status == 200
        assert STOPPING in lines[-1]["error"]
        assert "exit_status" not in lines[-1]
        # The proxied WebSocket: 1001 Going Away.
        msg = await asyncio.wait_for(ws_end, 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
        # The proxied event stream ends cleanly (a cut one raises ClientPayloadError).
        await asyncio.wait_for(sse.read(), 5)
        # The request held for the wake: a 503 that says why and when to retry.
        held_resp = await asyncio.wait_for(held, 5)
        assert held_resp.status == 503
        assert held_resp.headers["Retry-After"]
        assert STOPPING in (await held_resp.json())["detail"]

    # The lab saw both remote shells closed, the exec's interrupted before it finished.
    await wait_for(lambda: lab.consoles.open_sessions == 0, 5, "the lab's shells closed")
    assert "shutting down" in daemon.text
    assert "Traceback" not in daemon.text


async def start_and_wait(
    http: aiohttp.ClientSession, api: str, lab: LabServer, vmid: int
) -> asyncio.Task[aiohttp.ClientResponse]:
    """A power action that waits for its task (in flight, not a stream), once it runs."""
    ref = f"lab:{vmid}"

    async def known() -> bool:
        async with http.get(f"{api}/api/v1/guests/{ref}", headers=auth()) as resp:
            return resp.status == 200

    await wait_for(known, 15, "the first poll")
    task = asyncio.create_task(http.post(f"{api}/api/v1/guests/{ref}/start?wait=1", headers=auth()))
    await wait_for(lambda: lab.cluster.guests[vmid].busy is not None, 10, "the start task")
    return task


async def test_request_in_flight_finishes_within_the_grace(
    lab_server: LabServer, tmp_path: Path
) -> None:
    vmid = SLEEPY + 10
    lab_server.cluster.add_guest(vmid, "lxc", "shut-slow", "pve1", boot_time_s=1.0)
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab_server)
    async with (
        running_daemon(config) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        await daemon.wait_listening("api")
        start = await start_and_wait(
            http, f"http://127.0.0.1:{daemon.ports['api']}", lab_server, vmid
        )
        daemon.proc.send_signal(signal.SIGTERM)
        resp = await asyncio.wait_for(start, GRACE_S + 2)
        assert resp.status == 200, await resp.text()
        await asyncio.wait_for(daemon.finish(), GRACE_S + 2)
    assert daemon.proc.returncode == 0


async def test_second_signal_exits_at_once(lab_server: LabServer, tmp_path: Path) -> None:
    vmid = SLEEPY + 11
    lab_server.cluster.add_guest(vmid, "lxc", "shut-stuck", "pve1", boot_time_s=120.0)
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab_server, grace_s=60)
    async with (
        running_daemon(config) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        await daemon.wait_listening("api")
        stuck = await start_and_wait(
            http, f"http://127.0.0.1:{daemon.ports['api']}", lab_server, vmid
        )
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: "shutting down" in daemon.text, 5, "the drain to begin")
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.finish(), 5)
        assert time.monotonic() - started < 2
        stuck.cancel()
    assert daemon.proc.returncode == 128 + signal.SIGTERM
    assert "second SIGTERM: exiting at once" in daemon.text
