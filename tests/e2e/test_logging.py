"""What `pxproxy run` logs, as an operator reads it: the start-up summary, each wake with its
duration, idle stops, failed wakes, and which guest starts were pxproxy's own. In text and
in JSON (`--log-format json`: one object per line, every line parses)."""

from __future__ import annotations

import json
import re
import signal
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pxproxy import __version__
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for
from .daemon_process import DaemonProcess, running_daemon

pytestmark = pytest.mark.slow

WEB = 9411  # running; an always-on HTTP route and a TCP route
SLEEPY = 9412  # stopped; woken through the proxy, stopped again after 1s idle
LATE = 9413  # boots for longer than its wake_timeout: the wake fails, then succeeds late
POWERED = 9414  # started through pxproxy's power API
OUTSIDE = 9415  # started through the lab's own API: the one start made outside pxproxy
TOKEN = "logging-test-token-0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, lab: LabServer, tcp_port: int) -> None:
    def idle(**settings: str) -> dict[str, str]:
        return {"timeout": "10m", "wake_timeout": "30s", **settings}

    config = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"api": "127.0.0.1:0", "proxy": "127.0.0.1:0"},
        "api": {"tokens": [{"name": "ops", "secret": TOKEN, "scopes": ["read", "power"]}]},
        "routes": [
            {"host": "web.test", "guest": f"lab:{WEB}", "port": 8080},
            {"listen": f"127.0.0.1:{tcp_port}", "guest": f"lab:{WEB}", "port": 8080},
            {
                "host": "sleepy.test",
                "guest": f"lab:{SLEEPY}",
                "port": 8080,
                "idle": idle(timeout="1s", stop_method="stop"),
            },
            {
                "host": "late.test",
                "guest": f"lab:{LATE}",
                "port": 8080,
                "idle": idle(wake_timeout="0.5s", retry_after="10m"),
            },
            {"host": "powered.test", "guest": f"lab:{POWERED}", "port": 8080, "idle": idle()},
            {"host": "outside.test", "guest": f"lab:{OUTSIDE}", "port": 8080, "idle": idle()},
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def add_guests(lab: LabServer) -> None:
    lab.cluster.add_guest(WEB, "lxc", "log-web", "pve1", status="running")
    lab.cluster.add_guest(SLEEPY, "lxc", "log-sleepy", "pve1", boot_time_s=0.2)
    lab.cluster.add_guest(LATE, "lxc", "log-late", "pve1", boot_time_s=1.5)
    lab.cluster.add_guest(POWERED, "lxc", "log-powered", "pve1", boot_time_s=0.2)
    lab.cluster.add_guest(OUTSIDE, "lxc", "log-outside", "pve1", boot_time_s=0.2)


def entries(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """Every line of a JSON log, parsed: a line that is not one JSON object fails the test."""
    out = []
    for line in daemon.log:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        out.append(entry)
    return out


def find(daemon: DaemonProcess, msg: str, **fields: object) -> list[dict[str, Any]]:
    """JSON entries whose msg matches the regex `msg` and that carry `fields`."""
    return [
        e
        for e in entries(daemon)
        if re.search(msg, e["msg"]) and all(e.get(k) == v for k, v in fields.items())
    ]


async def logged(daemon: DaemonProcess, msg: str, **fields: object) -> dict[str, Any]:
    """The one JSON entry like `find`'s, once the daemon has written it (the log is read
    from a pipe, so a line may arrive after the answer it goes with)."""
    await wait_for(lambda: bool(find(daemon, msg, **fields)), 15, f"a log line {msg!r}")
    (entry,) = find(daemon, msg, **fields)
    return entry


async def get(http: aiohttp.ClientSession, url: str, host: str) -> int:
    async with http.get(url, headers={"Host": host}) as resp:
        await resp.read()
        return resp.status


async def route_state(http: aiohttp.ClientSession, api: str, host: str) -> str:
    async with http.get(f"{api}/api/v1/routes", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        routes = await r.json()
    return next(str(r["state"]) for r in routes if host in r.get("host", ()))


async def test_json_log_summary_wakes_idle_stops_and_whose_starts(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    add_guests(lab)
    await lab.cluster.open()
    config = tmp_path / "pxproxy.yml"
    tcp_port = free_port()
    write_config(config, lab, tcp_port)
    async with (
        running_daemon(config, args=("--log-format", "json")) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        await daemon.wait_listening("api", "proxy")
        api = f"http://127.0.0.1:{daemon.ports['api']}"
        proxy = f"http://127.0.0.1:{daemon.ports['proxy']}/"

        # The summary: version and config, each route, the listeners, then the cluster.
        start = await logged(daemon, "starting", version=__version__, config=str(config))
        assert start["level"] == "INFO"
        assert start["logger"] == "pxproxy.startup"
        ts = datetime.fromisoformat(start["ts"])
        assert ts.utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - ts).total_seconds()) < 60
        sleepy_route = await logged(daemon, r"^route sleepy\.test -> ", route="sleepy.test")
        assert sleepy_route["msg"] == (
            f"route sleepy.test -> lab:{SLEEPY}:8080, idle-watch: stop after 1s idle,"
            " wake_timeout 30s"
        )
        assert sleepy_route["stop_method"] == "stop"
        assert find(daemon, r"^route web\.test -> lab:9411:8080, always on$")
        listening = await logged(daemon, "^listening: ")
        assert listening["api"] == f"127.0.0.1:{daemon.ports['api']}"
        assert listening["proxy"] == f"127.0.0.1:{daemon.ports['proxy']}"
        assert f"tcp:127.0.0.1:{tcp_port} on 127.0.0.1:{tcp_port}" in listening["msg"]
        cluster = await logged(daemon, "^cluster lab: ", cluster="lab")
        assert cluster["msg"] == "cluster lab: PVE 8.4.14, 1 node (pve1), 5 guests (1 running)"
        assert (cluster["pve_version"], cluster["nodes"], cluster["guests"]) == (
            "8.4.14",
            ["pve1"],
            5,
        )

        # A wake through the proxy: INFO when it starts and when it is ready, with its duration.
        assert await get(http, proxy, "sleepy.test") == 200
        guest = f"lab:{SLEEPY}"
        waking = await logged(daemon, f"^idle-watch: waking {guest}$", guest=guest)
        assert (waking["level"], waking["route"]) == ("INFO", "sleepy.test")
        ready = await logged(daemon, f"^idle-watch: {guest} ready after [0-9.]+s$", guest=guest)
        assert ready["level"] == "INFO"
        assert ready["route"] == "sleepy.test"
        assert 0.2 <= ready["duration_s"] < 30
        # Then, idle for 1s, it is stopped: INFO naming the method.
        stopped = await logged(daemon, "idle for", guest=guest)
        assert stopped["msg"] == f"idle-watch: {guest} idle for 1s: stop, now stopped"
        assert (stopped["level"], stopped["method"]) == ("INFO", "stop")

        # Past wake_timeout: a WARNING, then pxproxy's own start finishes and it is ready.
        assert await get(http, proxy, "late.test") >= 500  # told the wake timed out
        late = f"lab:{LATE}"
        failed = await logged(daemon, f"^idle-watch: waking {late} failed", guest=late)
        assert failed["level"] == "WARNING"
        assert failed["error"] == "not ready after 0.5s"
        await wait_for(
            lambda: bool(find(daemon, "past its wake_timeout", guest=late)), 10, "the late ready"
        )
        assert await route_state(http, api, "late.test") == "ready"
        assert await get(http, proxy, "late.test") == 200

        # Through the power API: pxproxy's own start, so not "outside pxproxy".
        powered = f"lab:{POWERED}"
        async with http.post(
            f"{api}/api/v1/guests/{powered}/start?wait=1",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
        through_api = await logged(daemon, "power API", guest=powered)
        assert through_api["msg"] == (
            f"idle-watch: {powered} is running (started through pxproxy's power API)"
        )

        # Through the lab's API directly: the one start made outside pxproxy.
        lab.cluster.start(OUTSIDE)
        outside = f"lab:{OUTSIDE}"
        noticed = await logged(daemon, "outside pxproxy", guest=outside)
        assert noticed["msg"] == f"idle-watch: {outside} is running (started outside pxproxy)"
        assert noticed["outside"] is True
        # ... and only that one.
        assert [e["guest"] for e in find(daemon, "outside pxproxy")] == [outside]
    entries(daemon)  # the shutdown's lines are JSON too


async def test_text_log_summary_and_wake_lines(lab_server: LabServer, tmp_path: Path) -> None:
    lab = lab_server
    add_guests(lab)
    await lab.cluster.open()
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab, free_port())
    async with (
        running_daemon(config, args=("--log-level", "info")) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
    ):
        await daemon.wait_listening("api", "proxy")

        async def line(logger: str, pattern: str) -> None:
            full = rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} INFO {logger}: {pattern}\n"
            await wait_for(lambda: re.search(full, daemon.text) is not None, 15, pattern)

        version, path = re.escape(__version__), re.escape(str(config))
        await line(
            r"pxproxy\.startup", rf"pxproxy {version} starting; config {path}; clusters: lab"
        )
        await line(
            r"pxproxy\.startup",
            r"route sleepy\.test -> lab:9412:8080, idle-watch: stop after 1s idle, "
            r"wake_timeout 30s",
        )
        await line(
            r"pxproxy\.startup", r"listening: api 127\.0\.0\.1:\d+; proxy 127\.0\.0\.1:\d+; .*"
        )
        await line(
            r"pxproxy\.startup",
            r"cluster lab: PVE 8\.4\.14, 1 node \(pve1\), 5 guests \(1 running\)",
        )
        assert await get(http, f"http://127.0.0.1:{daemon.ports['proxy']}/", "sleepy.test") == 200
        await line(r"pxproxy\.wake\.waker", rf"idle-watch: waking lab:{SLEEPY}")
        await line(r"pxproxy\.wake\.waker", rf"idle-watch: lab:{SLEEPY} ready after \d+\.\d\ds")


async def test_log_level_flag_overrides_the_config(lab_server: LabServer, tmp_path: Path) -> None:
    """The config says debug, --log-level warning wins: a daemon that served a request and
    stopped cleanly wrote not one INFO or DEBUG line."""
    config = tmp_path / "pxproxy.yml"
    write_config(config, lab_server, free_port())
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    api_port = free_port()
    data.update(log_level="debug", listen={"api": f"127.0.0.1:{api_port}"}, routes=[])
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    async with (
        running_daemon(config, args=("--log-level", "warning")) as daemon,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):

        async def healthy() -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{api_port}/health") as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        await wait_for(healthy, 20, "the API")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.stdout is not None
        output = (await daemon.proc.stdout.read()).decode()
        assert await daemon.proc.wait() == 0
    assert " INFO " not in output
    assert " DEBUG " not in output
