"""The dashboard when things go wrong: Proxmox unreachable (the last known state shown and said
to be stale, then the recovery), and a webhook whose endpoint answers 500 (its failures shown
live in the Webhooks pane)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from pxproxy.events.hub import Event

from .conftest import ADMIN_TOKEN, READ_TOKEN, LoopThread, Stack, js, no_alert_opened, wait_dom
from .test_dashboard import row, rows_shown, scroll_to, sign_in, stream_live

# vmids 7441-7459: this module's.
GUESTS: list[dict[str, Any]] = [
    {"vmid": 7441, "name": "wiki", "status": "running"},
    {"vmid": 7442, "name": "sleeper", "boot_time_s": 0.5},
    {"vmid": 7443, "name": "db", "type": "qemu", "status": "running", "node": "pve2"},
]
# Markup in the receiver's answer: the pane must show it as text.
REFUSAL = "<img src=x onerror=alert(1)> down for maintenance"


def health(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "health").get_attribute("data-state") or ""


def poll_age(driver: WebDriver) -> int | None:
    """The seconds since the last good poll, as the page shows them (read in one call: the
    card is re-rendered on every poll)."""
    age = js(driver, """document.querySelector('.poll-age[data-cluster="lab"]')?.dataset.age""")
    return int(age) if age else None


def test_proxmox_down_shows_the_stale_state_and_recovers(
    browser: WebDriver, stack_factory: Callable[..., Stack], shot: Callable[[str], Path]
) -> None:
    stack = stack_factory(GUESTS)
    sign_in(browser, stack, READ_TOKEN)
    every = {f"lab:{g['vmid']}" for g in GUESTS}
    wait_dom(browser, lambda d: rows_shown(d) == every, "a row for every lab guest")
    wait_dom(browser, stream_live, "the live event stream")
    wait_dom(browser, lambda d: health(d) == "ok", "the health badge to say ok")
    stale = browser.find_element(By.ID, "stale")
    assert not stale.is_displayed()
    # No webhook configured: the pane stays hidden once the (empty) list has come.
    pane = browser.find_element(By.ID, "webhooks-pane")
    wait_dom(browser, lambda d: pane.get_attribute("data-count") == "0", "the webhook list")
    assert not pane.is_displayed()
    js(browser, "window.__same_page = true")

    # Proxmox goes away: its API listener closes, every poll fails to connect.
    stack.loop.run(stack.lab.stop_listening())
    try:
        wait_dom(browser, lambda d: stale.is_displayed(), "the stale-state warning")
        wait_dom(browser, lambda d: health(d) == "degraded", "the health badge to say degraded")
        text = stale.text
        assert text.startswith("Showing the last known state: lab is failed (")
        assert text.endswith(")")
        # Every poll re-renders the card: read it in one go, from the page.
        card = js(
            browser,
            """(() => { const li = document.querySelector('#cluster-list li[data-cluster="lab"]');
            return [li.dataset.state, li.querySelector(".cluster-error").textContent]; })()""",
        )
        assert card[0] == "failed"
        assert "cannot reach" in card[1]
        assert card[1] in text  # the poll's own error, named in the warning
        # The guests are still listed, as last seen.
        assert rows_shown(browser) == every
        assert row(browser, "lab:7441").get_attribute("data-state") == "running"
        # The last good poll gets older, second by second.
        first = wait_dom(browser, lambda d: poll_age(d), "a poll age")
        second = wait_dom(
            browser, lambda d: (a := poll_age(d)) is not None and a > first and a, "it to grow"
        )
        wait_dom(browser, lambda d: (poll_age(d) or 0) > second, "it to grow again")
        scroll_to(browser, "#clusters")
        shot("proxmox-down")
        # The daemon says the same as the page.
        body = browser.execute_async_script(
            """const done = arguments[arguments.length - 1];
            fetch("../health", {cache: "no-store"})
              .then((r) => r.json()).then(done, (e) => done(String(e)));"""
        )
        assert body["status"] == "degraded"
    finally:
        stack.loop.run(stack.lab.start_listening())

    # Back: the warning goes, the badge and the poll age say so, without a reload.
    wait_dom(browser, lambda d: not stale.is_displayed(), "the stale warning to go")
    wait_dom(browser, lambda d: health(d) == "ok", "the health badge to say ok again")
    wait_dom(browser, lambda d: (a := poll_age(d)) is not None and a <= 2, "a fresh poll age")
    assert (
        js(
            browser,
            """document.querySelector('#cluster-list li[data-cluster="lab"]')
        .dataset.state""",
        )
        == "ok"
    )
    assert rows_shown(browser) == every
    assert js(browser, "window.__same_page") is True
    shot("recovered")


@dataclass
class Receiver:
    """A webhook endpoint on loopback that refuses every delivery with a 500."""

    url: str
    received: list[str] = field(default_factory=list)  # the X-Pxproxy-Event of each try


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    loop = LoopThread()
    runner: web.AppRunner | None = None
    hook = Receiver("")

    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        hook.received.append(request.headers.get("X-Pxproxy-Event", ""))
        return web.Response(status=500, text=REFUSAL)

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook/secret-path", refuse)
        started = web.AppRunner(app, access_log=None, handle_signals=False)
        await started.setup()
        await web.TCPSite(started, "127.0.0.1", 0).start()
        return started

    try:
        runner = loop.run(start())
        port = runner.addresses[0][1]
        hook.url = f"http://127.0.0.1:{port}/hook/secret-path"
        yield hook
    finally:
        if runner is not None:
            loop.run(runner.cleanup())
        loop.close()


def webhook(driver: WebDriver) -> dict[str, Any]:
    """The `ops` row as the page shows it, read in one call (every refetch re-renders it)."""
    found = js(
        driver,
        """(() => {
          const tr = document.querySelector('#webhooks tbody tr[data-webhook="ops"]');
          if (!tr) return null;
          const text = (css) => tr.querySelector(css).innerText;
          return {
            state: tr.dataset.state, name: text("td.name"), delivered: text("td.delivered"),
            failed: text("td.failed"), last_error: text("td.last-error"),
            last_success: text("td.last-success"), imgs: tr.querySelectorAll("img").length,
            recent: [...tr.querySelectorAll("td.recent li")].map((li) => li.innerText),
          };
        })()""",
    )
    return found or {}


def test_webhook_failures_show_live_in_the_webhooks_pane(
    browser: WebDriver,
    stack_factory: Callable[..., Stack],
    receiver: Receiver,
    shot: Callable[[str], Path],
) -> None:
    browser.set_window_size(1280, 1400)
    try:
        hook = {
            "name": "ops",
            "url": receiver.url,
            "format": "json",
            "events": ["wake", "ready"],
            "timeout": "2s",
            "retries": 1,
            "backoff": "100ms",
            "backoff_max": "200ms",
        }
        stack = stack_factory(GUESTS, extra={"webhooks": [hook]})
        sign_in(browser, stack, ADMIN_TOKEN)
        wait_dom(browser, stream_live, "the live event stream")
        pane = browser.find_element(By.ID, "webhooks-pane")
        wait_dom(browser, lambda d: pane.is_displayed(), "the Webhooks pane")
        assert webhook(browser)["delivered"] == "0"
        assert webhook(browser)["failed"] == "0"
        assert webhook(browser)["last_error"] == "–"
        name = webhook(browser)["name"]
        # The host only: the URL's path often holds the endpoint's token.
        assert name.startswith("ops json → 127.0.0.1:")
        assert "secret-path" not in name
        js(browser, "window.__same_page = true")

        # A wake from the dashboard: `wake` and `ready` events, each refused twice (1 retry).
        button = row(browser, "lab:7442").find_element(
            By.CSS_SELECTOR, 'button[data-action="wake"]'
        )
        button.click()
        wait_dom(
            browser,
            lambda d: "HTTP 500" in webhook(d).get("last_error", ""),
            "the last error in the Webhooks pane",
        )
        wait_dom(
            browser, lambda d: webhook(d)["failed"] == "2", "both deliveries given up on, live"
        )
        assert sorted(receiver.received) == ["ready", "ready", "wake", "wake"]
        last_error = webhook(browser)["last_error"]
        assert f"HTTP 500: {REFUSAL}" in last_error  # the markup shown as text
        assert webhook(browser)["imgs"] == 0
        assert no_alert_opened(browser)
        assert webhook(browser)["state"] == "failing"
        assert webhook(browser)["delivered"] == "0"
        assert "never" in webhook(browser)["last_success"]
        recent = webhook(browser)["recent"]
        # Newest first: one line per delivery given up on, naming its event and guest.
        assert [li.split(": ")[0] for li in recent] == ["ready lab:7442", "wake lab:7442"]
        assert all("HTTP 500, 2 tries" in li for li in recent)
        # The ages tick on with the page's clock.
        wait_dom(browser, lambda d: " ago" in webhook(d).get("last_error", ""), "the error's age")
        assert js(browser, "window.__same_page") is True
        scroll_to(browser, "#webhooks-pane")
        shot("webhooks")
    finally:
        browser.set_window_size(1280, 900)


def test_the_webhooks_refetch_is_throttled_to_once_a_second(
    browser: WebDriver,
    stack_factory: Callable[..., Stack],
    receiver: Receiver,
) -> None:
    """A burst of `webhook` events costs the page one GET /api/v1/webhooks a second at most,
    and the burst's last state is always fetched."""
    hook = {"name": "ops", "url": receiver.url, "retries": 0, "events": ["wake"]}
    stack = stack_factory(GUESTS, extra={"webhooks": [hook]})
    sign_in(browser, stack, READ_TOKEN)
    wait_dom(browser, stream_live, "the live event stream")
    wait_dom(browser, lambda d: d.find_element(By.ID, "webhooks-pane").is_displayed(), "the pane")
    # Count the page's fetches of the list from here on.
    js(
        browser,
        """(() => {
          window.__webhook_fetches = [];
          const real = window.fetch;
          window.fetch = function (url, options) {
            if (String(url).endsWith("/api/v1/webhooks")) window.__webhook_fetches.push(Date.now());
            return real.call(this, url, options);
          };
          return true;
        })()""",
    )

    # Ten failed tries, as the stream delivers them (the hub fans them out to this page).
    def burst() -> None:
        for n in range(1, 11):
            data = {"name": "ops", "event": "wake", "ok": False, "status": 500}
            data |= {"error": "HTTP 500", "attempt": n, "at": 0}
            stack.daemon.events.publish(Event("webhook", data))

    stack.loop.call(burst)
    wait_dom(browser, lambda d: js(d, "window.__webhook_fetches.length") >= 1, "a refetch")
    wait_dom(
        browser,
        lambda d: "try 10" in d.find_element(By.ID, "status").text,
        "the page to have read the whole burst",
    )
    # Every event has been read; a second refetch (the burst's trailing one) may follow, a
    # second after the first, and no more than that: wait out the trailing window by the
    # page's own clock, then count.
    first = js(browser, "window.__webhook_fetches[0]")
    wait_dom(browser, lambda d: js(d, f"Date.now() - {first} > 1500"), "the throttle window")
    times = js(browser, "window.__webhook_fetches")
    assert 1 <= len(times) <= 2, times
    if len(times) == 2:
        assert times[1] - times[0] >= 1000 - 20, times
