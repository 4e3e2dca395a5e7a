"""A real browser against a `pxproxy demo`-style stack: Debian's chromium, headless, driven by
selenium; the lab and the daemon in an event loop on a thread of their own, so the test's
blocking WebDriver calls never stall them.

Waits are DOM conditions with a deadline (`wait_dom`), never fixed sleeps. Screenshots go to
artifacts/screenshots/ at the repo root, named <test>-<step>.png; a failing test gets a
<test>-failure.png too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.certs import LabCertificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import GuestRuntime, LabCluster, LabGuest

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# Route hosts: Chromium resolves them through --host-resolver-rules, no /etc/hosts needed.
DOMAIN = "browser.localhost"
ADMIN_TOKEN = "browser-admin-token-0123456789"
READ_TOKEN = "browser-read-token-0123456789"
DEADLINE_S = 20.0
# Replaces window.alert & co. in every document before its own scripts run: an injected
# alert() is counted instead of blocking the page (and the WebDriver) behind a dialog.
ALERT_TRAP = """
window.__alerts = 0;
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = function () { window.__alerts += 1; };
}
"""


def wait_dom(
    driver: WebDriver,
    condition: Callable[[WebDriver], T | None],
    what: str,
    timeout_s: float = DEADLINE_S,
) -> T:
    """Poll `condition` until it gives a true value, or fail saying what was awaited."""
    try:
        result = WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition)
    except TimeoutException:
        pytest.fail(f"waited {timeout_s:g}s for {what}; page {driver.current_url}")
    assert result is not None  # until() returns only a true value
    return result


def js(driver: WebDriver, expression: str) -> Any:
    """The value of a JavaScript expression in the current page."""
    return driver.execute_script(f"return ({expression});")


def no_alert_opened(driver: WebDriver) -> bool:
    """True when no dialog is open now and none was trapped since the page loaded."""
    try:
        driver.switch_to.alert.dismiss()
    except NoAlertPresentException:
        return not js(driver, "window.__alerts || 0")
    return False


# -- the browser ---------------------------------------------------------------------------


def _processes_using(marker: str) -> set[int]:
    """The pids whose command line holds `marker` (the session's own profile directory: every
    chromium process, crashpad's included, names it; nothing else does)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    found.add(int(entry))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _reap(pids: set[int], deadline_s: float = 5.0) -> None:
    """Wait for the browser's processes to go; kill (by pid) any still there at the deadline."""
    end = time.monotonic() + deadline_s
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)  # polling the processes' exit, not waiting for a page
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless chromium, one for the session (each test's stack has its own origins)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver")
    profile = str(tmp_path_factory.mktemp("chromium-profile"))
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs the tests as root, where the sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--no-proxy-server",
        f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-crash-reporter",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    service = Service(CHROMEDRIVER)
    driver: WebDriver | None = None
    try:
        driver = webdriver.Chrome(service=service, options=options)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_TRAP})
        yield driver
    finally:
        # Whatever happened (a start that failed half-way too): no browser process outlives us.
        processes = _processes_using(profile)
        if service.process is not None:
            processes.add(service.process.pid)
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        else:
            with contextlib.suppress(Exception):
                service.stop()
        _reap(processes | _processes_using(profile))


# -- screenshots ---------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


@pytest.fixture
def shot(request: pytest.FixtureRequest, browser: WebDriver) -> Iterator[Callable[[str], Path]]:
    """shot("step") saves the page as artifacts/screenshots/<test>-<step>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = _slug(request.node.name)
    for stale in SCREENSHOTS.glob(f"{test}-*.png"):
        stale.unlink()  # an earlier run's steps (a failure's) must not pass for this run's

    def take(step: str) -> Path:
        path = SCREENSHOTS / f"{test}-{_slug(step)}.png"
        browser.save_screenshot(str(path))
        return path

    yield take
    if request.node.stash.get(_FAILED, False):
        with contextlib.suppress(Exception):
            take("failure")


# -- the stack -----------------------------------------------------------------------------


class LoopThread:
    """An event loop running on its own thread; `run` hands it a coroutine and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout_s: float = 30.0) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        """A plain function run on the loop's thread (lab state is the loop's to change)."""

        async def wrapped() -> T:
            return fn()

        return self.run(wrapped())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class HeldPorts:
    """The lab's runtime, except that a held guest's servers open only when released: its
    start task ends ("running") while its port stays shut, so the wake sits in the port
    stage for as long as the test needs to watch it there."""

    def __init__(self, inner: GuestRuntime) -> None:
        self.inner = inner
        self.held: dict[int, LabGuest | None] = {}

    async def open(self, guest: LabGuest) -> None:
        if guest.vmid in self.held:
            self.held[guest.vmid] = guest
            return
        await self.inner.open(guest)

    async def close(self, guest: LabGuest) -> None:
        await self.inner.close(guest)

    async def release(self, vmid: int) -> bool:
        """Open the held guest's servers; False if it has not been started yet."""
        guest = self.held.get(vmid)
        if guest is None:
            return False
        del self.held[vmid]
        await self.inner.open(guest)
        return True


@dataclass
class Stack:
    """A lab and a daemon, like `pxproxy demo`; `route(name)` is a guest's URL via the proxy."""

    loop: LoopThread
    lab: LabServer
    daemon: Daemon
    config: Config
    ports: HeldPorts
    api: str = ""
    names: dict[int, str] = field(default_factory=dict)

    def route(self, name: str, path: str = "/") -> str:
        return f"http://{name}.{DOMAIN}:{self.daemon.proxy_port}{path}"

    def host(self, name: str) -> str:
        return f"{name}.{DOMAIN}"


GuestSpec = dict[str, Any]


@pytest.fixture
def stack_factory(
    browser: WebDriver, lab_certificate: LabCertificate
) -> Iterator[Callable[..., Stack]]:
    """start(guests, proxy=..., poll="500ms", route_extra={name: {...}}, held=(vmid,),
    extra={top-level config keys}) -> Stack.
    Each guest spec is LabCluster.add_guest's keywords (vmid, type, name, status, ...) plus
    `route: False` to give it no route. Stopped guests' routes are idle-watched, so a request
    wakes them (as in the demo). `held` guests' ports stay shut until `stack.ports.release`."""
    started: list[tuple[LoopThread, LabServer, Daemon | None]] = []

    def start(
        guests: list[GuestSpec],
        *,
        proxy: dict[str, Any] | None = None,
        poll: str = "500ms",
        route_extra: dict[str, dict[str, Any]] | None = None,
        held: tuple[int, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> Stack:
        loop = LoopThread()
        cluster = LabCluster(cluster_name="lab")
        cluster.add_node("pve1")
        cluster.add_node("pve2")
        routes: list[dict[str, Any]] = []
        names: dict[int, str] = {}
        for raw in guests:
            spec = dict(raw)
            wants_route = spec.pop("route", True)
            vmid, kind, name = spec.pop("vmid"), spec.pop("type", "lxc"), spec.pop("name")
            spec.setdefault("boot_time_s", 1.0)
            cluster.add_guest(vmid, kind, name, spec.pop("node", "pve1"), **spec)
            names[vmid] = name
            if not wants_route:
                continue
            # By name, as a user writes it; by vmid when the name is a hostile one.
            ref = name if re.fullmatch(r"[A-Za-z0-9-]+", name) else f"lab:{vmid}"
            host = ref if ref == name else f"guest{vmid}"
            route: dict[str, Any] = {"host": f"{host}.{DOMAIN}", "guest": ref, "port": 8080}
            if spec.get("status", "stopped") != "running":
                route["idle"] = {"timeout": "1m", "wake_timeout": "30s", "stop_method": "shutdown"}
            route.update((route_extra or {}).get(name, {}))
            routes.append(route)
        lab = LabServer(cluster, port=0, certificate=lab_certificate)
        ports = HeldPorts(lab.servers)
        cluster.runtime = ports
        ports.held.update(dict.fromkeys(held))
        started.append((loop, lab, None))
        loop.run(lab.start())
        data: dict[str, Any] = {
            "proxmox": [lab.proxmox_entry(poll_interval=poll, notes_refresh="1s")],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {
                "tokens": [
                    {"name": "admin", "secret": ADMIN_TOKEN, "scopes": ["read", "power", "exec"]},
                    {"name": "reader", "secret": READ_TOKEN, "scopes": ["read"]},
                ]
            },
            "routes": routes,
            "state": {"enabled": False},
        }
        if proxy:
            data["proxy"] = proxy
        data.update(extra or {})  # more top-level config keys (webhooks, ...)
        config = Config.model_validate(data)
        daemon = Daemon(config)
        started[-1] = (loop, lab, daemon)
        loop.run(daemon.start())
        loop.run(
            daemon.inventory.wait_until(
                lambda s: "lab" in s.clusters and len(s.guests) >= len(guests), DEADLINE_S
            )
        )
        api = f"http://127.0.0.1:{daemon.api_port}"
        return Stack(loop, lab, daemon, config, ports, api, names)

    yield start
    # Close the page first: its event streams must not hold the daemon's shutdown open.
    with contextlib.suppress(Exception):
        browser.get("about:blank")
    for loop, lab, daemon in reversed(started):
        try:
            if daemon is not None:
                loop.run(daemon.stop())
            loop.run(lab.stop())
        finally:
            loop.close()
