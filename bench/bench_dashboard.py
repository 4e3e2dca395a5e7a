"""The dashboard (`/ui/`) with 1,000 guests, and what open dashboards cost the daemon.

1. Headless Chromium (Debian's chromium + chromedriver, selenium) opens `/ui/` RUNS times; the
   token is put in sessionStorage before the page's scripts run, so the page signs itself in as
   after a reload. A script injected into the page records `performance.now()` (milliseconds
   since navigation started) when all 1,000 guest rows are in the table, when the frame after
   that is painted, and when the first `stats` event has been applied (a CPU sparkline gets its
   second point). Then a guest is stopped in the lab: the time to its `guests` event on an
   events stream read beside the page, and to its row showing it. Live updates wait for the
   next poll (`POLL`), so they include up to one poll interval.
2. 100 open dashboards, as 100 plain aiohttp clients each holding `GET /api/v1/events` (what a
   dashboard page holds open; aiohttp rather than 100 Chromium tabs, which this 2-core VM
   cannot run, so the figure is the daemon's cost per stream, not a browser's). Windows of
   WINDOW_S with 0 and with 100 streams open, order rotated each round: the lab's Proxmox API
   requests per second (the lab logs every request it answers: `LabApi.requests`) and the
   daemon's RSS from /proc at the end of each window.

The lab runs in this process (to count its requests), with no guest servers (the dashboard
never reaches the guests); the daemon is `pxproxy run` in its own process. Run it in a network
namespace of its own (the lab's vmids 100-1099):

    ip netns add bd; ip netns exec bd ip link set lo up
    ip netns exec bd python3 -m bench.bench_dashboard
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster, NullRuntime

from ._stack import free_port, stop_all
from ._util import row, rss_bytes

GUESTS = 1000
CHANGED = 150  # the running guest the browser part stops (and starts again) in the lab
FIRST_VMID = 100
POLL = "2s"
TOKEN = "bench-dashboard-token-0123456789"
STREAMS = 100
SETTLED = 5.0  # calls/s: below it, the daemon's first resolution of the guests is over
WINDOW_S = 20.0
RUNS = 5
ROUNDS = 3
DEADLINE_S = 60.0
# The streams' source addresses: 100 dashboards are 100 browsers, not one address, and the API
# admits 64 connections per client address (api.max_connections_per_client).
SOURCES = tuple(f"127.0.0.{11 + i}" for i in range(4))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Before the app's own scripts: the stored token (the page signs in with it at load) and a
# watcher noting when the rows are all there, painted, and when the first stats point lands.
PAGE_WATCH = """
if (location.pathname.startsWith("/ui/")) {
  sessionStorage.setItem("pxproxy.token", %(token)s);
  const b = { full: null, painted: null, live: null, watch: null, changed: null };
  window.__bench = b;
  const check = () => {
    if (b.full === null) {
      if (document.querySelectorAll("#guests tbody tr[data-guest]").length >= %(guests)d) {
        b.full = performance.now();
        requestAnimationFrame(() => setTimeout(() => (b.painted = performance.now())));
      }
    }
    // fetchGuests gives every sparkline its first point; a second is a stats event's.
    if (b.full !== null && b.live === null && document.querySelector(
        '#guests svg.spark-cpu[data-points]:not([data-points="0"]):not([data-points="1"])')) {
      b.live = performance.now();
    }
    // Set from outside: {ref, state}; the wall clock when that row shows that state.
    if (b.watch && b.changed === null) {
      const tr = document.querySelector(`#guests tr[data-guest="${b.watch.ref}"]`);
      if (tr && tr.dataset.state === b.watch.state) b.changed = Date.now();
    }
    setTimeout(check, b.live === null ? 5 : 10);
  };
  setTimeout(check, 0);
}
"""


def scenario() -> dict[str, Any]:
    """1,000 guests on three nodes, LXC and QEMU, 70 % running, some tagged: the spec a
    `pxproxy lab --scenario` file holds."""
    guests = []
    for i in range(GUESTS):
        vmid = FIRST_VMID + i
        guests.append(
            {
                "vmid": vmid,
                "type": "qemu" if i % 4 == 3 else "lxc",
                "name": f"guest-{vmid}",
                "node": f"pve{i % 3 + 1}",
                "status": "running" if i % 10 < 7 else "stopped",
                "static_ip": True,
                "tags": ["web", "lab"] if i % 5 == 0 else ["lab"],
                "boot_time_s": 0.1,
            }
        )
    return {"cluster": "lab", "nodes": ["pve1", "pve2", "pve3"], "guests": guests}


def daemon_config(lab_entry: dict[str, Any], proxy_port: int, api_port: int) -> dict[str, Any]:
    routes: list[dict[str, Any]] = [
        {"host": f"g{vmid}.bench.local", "guest": vmid, "port": 8080}
        for vmid in range(FIRST_VMID, FIRST_VMID + 5)
    ]
    # Two stopped guests behind idle routes: the dashboard shows their wake state.
    routes += [
        {"host": f"g{vmid}.bench.local", "guest": vmid, "port": 8080, "idle": {"timeout": "1h"}}
        for vmid in (FIRST_VMID + 7, FIRST_VMID + 8)
    ]
    return {
        "proxmox": [lab_entry],
        "listen": {"proxy": f"127.0.0.1:{proxy_port}", "api": f"127.0.0.1:{api_port}"},
        "api": {"tokens": [{"name": "bench", "secret": TOKEN, "scopes": ["read", "power"]}]},
        "routes": routes,
        "state": {"enabled": False},
        "log_level": "warning",
    }


@dataclass
class Bench:
    api: str
    daemon_pid: int
    requests: list[tuple[str, str]]  # the lab's request log
    cluster: LabCluster


class StatusWatch:
    """One events stream read beside the page: the wall clock (ms) of the latest `guests`
    event giving CHANGED each status, to split the page's delay from the daemon's."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def run(self, api: str) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{api}/api/v1/events", headers=headers) as resp,
        ):
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                    self.ready.set()
                elif line.startswith("data: ") and kind == "guests":
                    for g in json.loads(line[6:]).get("changed", []):
                        if g.get("vmid") == CHANGED:
                            self.seen[g["status"]] = time.time() * 1000


async def status_change(bench: Bench, browser: Browser, stream: StatusWatch) -> tuple[float, float]:
    """ms from stopping CHANGED in the lab to the `guests` event on a stream and to the open
    page showing it stopped; then it is started again and the page shows it running."""
    ref = f"lab:{CHANGED}"
    await asyncio.to_thread(browser.watch, ref, "stopped")
    stream.seen.clear()
    started = time.time() * 1000
    await bench.cluster.stop(CHANGED).wait()
    page = await asyncio.to_thread(browser.changed) - started
    event = stream.seen["stopped"] - started  # the page shows it: the event came first
    await asyncio.to_thread(browser.watch, ref, "running")
    await bench.cluster.start(CHANGED).wait()
    await asyncio.to_thread(browser.changed)
    return event, page


async def wait_guests(api: str) -> None:
    """Until the daemon lists every guest."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session, asyncio.timeout(DEADLINE_S):
        while True:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with session.get(f"{api}/api/v1/guests", headers=headers) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                        listed = body if isinstance(body, list) else body.get("guests", [])
                        if len(listed) >= GUESTS:
                            return
            await asyncio.sleep(0.2)


async def settle(bench: Bench, deadline_s: float = 180.0) -> float:
    """Until the first resolution of every guest is over (hundreds of interface and config
    calls at first): a 4 s window under SETTLED calls per second. The seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        before = len(bench.requests)
        await asyncio.sleep(4.0)  # a sampling window of the lab's request log
        if (len(bench.requests) - before) / 4.0 < SETTLED:
            return time.monotonic() - start
    raise RuntimeError(f"the daemon's Proxmox calls did not settle in {deadline_s:g} s")


# ------------------------------------------------------------------ 1. the browser


def _processes_using(marker: str) -> set[int]:
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.add(int(entry))
    return found


class Browser:
    """Headless Chromium like tests/browser/conftest.py starts it; every process it started is
    ended by pid on close."""

    def __init__(self, profile: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.access(path, os.X_OK):
                raise SystemExit(f"{path} is missing: install Debian's chromium, chromium-driver")
        self.profile = profile
        options = Options()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new",
            "--no-sandbox",  # run as root, where the sandbox cannot start
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,900",
            "--no-proxy-server",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--disable-crash-reporter",
            f"--user-data-dir={profile}",
        ):
            options.add_argument(arg)
        self.service = Service(CHROMEDRIVER)
        self.driver = webdriver.Chrome(service=self.service, options=options)
        script = PAGE_WATCH % {"token": json.dumps(TOKEN), "guests": GUESTS}
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})

    def load(self, url: str) -> dict[str, float]:
        """One navigation: the watcher's marks in ms since navigation started."""
        self.driver.get("about:blank")
        self.driver.get(url)
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            marks = self.driver.execute_script("return window.__bench || null;")
            if marks and marks.get("live") is not None and marks.get("painted") is not None:
                return {k: float(marks[k]) for k in ("full", "painted", "live")}
            time.sleep(0.05)  # polling the page's own marks, which hold the times measured
        raise RuntimeError(f"the dashboard did not render {GUESTS} rows + a live update: {marks}")

    def watch(self, ref: str, state: str) -> None:
        self.driver.execute_script(
            "window.__bench.watch = arguments[0]; window.__bench.changed = null;",
            {"ref": ref, "state": state},
        )

    def changed(self) -> float:
        """The page's wall clock (ms) when the watched row changed, once it did."""
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            at = self.driver.execute_script("return window.__bench.changed;")
            if at is not None:
                return float(at)
            time.sleep(0.05)  # polling the page's own mark
        raise RuntimeError("the dashboard did not show the guest's status change")

    def close(self) -> None:
        pids = _processes_using(self.profile)
        if self.service.process is not None:
            pids.add(self.service.process.pid)
        with contextlib.suppress(Exception):
            self.driver.quit()
        for pid in pids | _processes_using(self.profile):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def browser_part(bench: Bench, runs: int) -> None:
    print(f"dashboard in headless Chromium, {GUESTS} guests, poll {POLL}, {runs} loads:")
    with tempfile.TemporaryDirectory(prefix="pxproxy-bench-chromium-") as profile:
        browser = await asyncio.to_thread(Browser, profile)
        stream = StatusWatch()
        reader = asyncio.create_task(stream.run(bench.api), name="status-watch")
        try:
            async with asyncio.timeout(DEADLINE_S):
                await stream.ready.wait()
            marks = []
            for _ in range(runs):
                marks.append(await asyncio.to_thread(browser.load, f"{bench.api}/ui/"))
                event, page = await status_change(bench, browser, stream)
                marks[-1] |= {"event": event, "status": page}
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await asyncio.to_thread(browser.close)
    for key, label in (
        ("full", f"navigation + sign-in -> {GUESTS} rows in the DOM"),
        ("painted", "  ... and the next frame painted"),
        ("live", "  ... first stats event applied (sparkline point)"),
        ("event", f"guest stopped in the lab -> `guests` event (vmid {CHANGED})"),
        ("status", "  ... -> its row in the page shows it"),
    ):
        values = [m[key] for m in marks]
        spread = ", ".join(f"{v:.0f}" for v in values)
        row(label, f"{statistics.median(values):.0f} ms", f"({spread})")
    print(f"  (live updates wait for the next poll: up to {POLL} after the stream opens or the")
    print("   guest stops; the daemon polls on its own clock, the dashboard adds nothing to it)")


# ------------------------------------------------------------------ 2. open dashboards


@dataclass
class Streams:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stats_events: list[int] = field(default_factory=list)


async def hold_stream(
    session: aiohttp.ClientSession, url: str, index: int, streams: Streams, ready: asyncio.Event
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"stream {index}: HTTP {resp.status}: {await resp.text()}")
        seen_hello = False
        tail = b""
        async for chunk in resp.content.iter_any():
            text = tail + chunk
            if not seen_hello and b"event: hello" in text:
                seen_hello = True
                ready.set()
            streams.stats_events[index] += text.count(b"event: stats\n")
            tail = text[-16:]


async def open_streams(bench: Bench, sessions: list[aiohttp.ClientSession], count: int) -> Streams:
    streams = Streams(stats_events=[0] * count)
    readies = [asyncio.Event() for _ in range(count)]
    for i in range(count):
        streams.tasks.append(
            asyncio.create_task(
                hold_stream(
                    sessions[i % len(sessions)],
                    f"{bench.api}/api/v1/events",
                    i,
                    streams,
                    readies[i],
                ),
                name=f"stream-{i}",
            )
        )
    async with asyncio.timeout(DEADLINE_S):
        for task, ready in zip(streams.tasks, readies, strict=True):
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():
                waiter.cancel()
                task.result()  # its error
                raise RuntimeError("a stream ended before its hello")
    return streams


async def close_streams(streams: Streams) -> None:
    for task in streams.tasks:
        task.cancel()
    await asyncio.gather(*streams.tasks, return_exceptions=True)


@dataclass(frozen=True)
class Window:
    calls_per_s: float
    resources_per_s: float
    rss: int
    stats_per_stream_s: float


async def window(bench: Bench, streams: Streams | None, window_s: float) -> Window:
    """`window_s` of the lab's request log and the daemon's RSS at its end."""
    before = len(bench.requests)
    events_before = sum(streams.stats_events) if streams else 0
    start = time.monotonic()
    await asyncio.sleep(window_s)  # the measurement window itself
    elapsed = time.monotonic() - start
    new = bench.requests[before:]
    per_stream = 0.0
    if streams and streams.stats_events:
        got = sum(streams.stats_events) - events_before
        per_stream = got / len(streams.stats_events) / elapsed
    return Window(
        calls_per_s=len(new) / elapsed,
        resources_per_s=sum(1 for _, p in new if p.endswith("/cluster/resources")) / elapsed,
        rss=rss_bytes(bench.daemon_pid),
        stats_per_stream_s=per_stream,
    )


async def streams_part(bench: Bench, rounds: int, window_s: float) -> None:
    print(
        f"\n{STREAMS} open dashboards ({STREAMS} aiohttp clients on /api/v1/events, not browsers),"
        f" {rounds} rounds of {window_s:g} s windows, order rotated:"
    )
    idle: list[Window] = []
    held: list[Window] = []
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with contextlib.AsyncExitStack() as stack:
        sessions = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, local_addr=(source, 0)),
                    timeout=timeout,
                )
            )
            for source in SOURCES
        ]
        baseline = rss_bytes(bench.daemon_pid)
        for r in range(rounds):
            for with_streams in (r % 2 == 1, r % 2 == 0):
                if with_streams:
                    if not held:
                        baseline = rss_bytes(bench.daemon_pid)  # before any stream was opened
                    streams = await open_streams(bench, sessions, STREAMS)
                    try:
                        held.append(await window(bench, streams, window_s))
                    finally:
                        await close_streams(streams)
                else:
                    idle.append(await window(bench, None, window_s))
                w = (held if with_streams else idle)[-1]
                print(
                    f"  round {r + 1}, {STREAMS if with_streams else 0:>3} streams:"
                    f" {w.calls_per_s:6.2f} API calls/s, RSS {w.rss / 2**20:6.1f} MiB"
                )

    def med(ws: list[Window], attr: str) -> float:
        return statistics.median(getattr(w, attr) for w in ws)

    calls0, calls100 = med(idle, "calls_per_s"), med(held, "calls_per_s")
    print("medians:")
    row("Proxmox API calls/s, 0 streams", f"{calls0:.2f}")
    row(f"Proxmox API calls/s, {STREAMS} streams", f"{calls100:.2f}")
    ratio = calls100 / calls0 if calls0 else float("nan")
    row(f"  ratio {STREAMS} ÷ 0", f"{ratio:.2f}", "target <= 1.00 (no more calls)")
    row(
        "  of them /cluster/resources, 0 / 100",
        f"{med(idle, 'resources_per_s'):.2f} / {med(held, 'resources_per_s'):.2f}",
    )
    rss100 = med(held, "rss")
    row("daemon RSS before any stream", f"{baseline / 2**20:.1f} MiB")
    row(f"daemon RSS with {STREAMS} streams", f"{rss100 / 2**20:.1f} MiB")
    row("  per dashboard", f"{(rss100 - baseline) / STREAMS / 1024:.1f} KiB")
    row(
        "daemon RSS, 0-stream windows after streams closed",
        f"{med(idle[1:] or idle, 'rss') / 2**20:.1f} MiB",
        "(kept at its high-water mark)",
    )
    row("stats events per stream per second", f"{med(held, 'stats_per_stream_s'):.2f}")


# ------------------------------------------------------------------ the stack


async def main_async(runs: int, rounds: int, window_s: float, skip_browser: bool) -> None:
    cluster = LabCluster.from_spec(scenario())
    lab = LabServer(cluster, host="127.0.0.1", port=free_port())
    cluster.runtime = NullRuntime()  # no guest servers: the dashboard never reaches guests
    await lab.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        with tempfile.TemporaryDirectory(prefix="pxproxy-bench-dash-") as tmp:
            proxy_port, api_port = free_port(), free_port()
            config = Path(tmp) / "pxproxy.yml"
            entry = lab.proxmox_entry(poll_interval=POLL)
            # JSON is YAML: no quoting to get wrong.
            config.write_text(json.dumps(daemon_config(entry, proxy_port, api_port)), "utf-8")
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pxproxy", "run", "-c", str(config)
            )
            procs.append(daemon)
            api = f"http://127.0.0.1:{api_port}"
            await wait_guests(api)
            bench = Bench(api, daemon.pid, lab.api.requests, cluster)
            settled = await settle(bench)
            print(
                f"{GUESTS} guests listed; the daemon's Proxmox calls settled after {settled:.0f} s"
            )
            if not skip_browser:
                await browser_part(bench, runs)
            await streams_part(bench, rounds, window_s)
    finally:
        await stop_all(procs)
        await lab.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=RUNS, help="browser loads")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="0 / 100-stream pairs")
    parser.add_argument("--no-browser", action="store_true", help="only the streams part")
    parser.add_argument("--window", type=float, default=WINDOW_S, help="seconds per window")
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.runs, args.rounds, args.window, args.no_browser))


if __name__ == "__main__":
    main()
