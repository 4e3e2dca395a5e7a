"""The dashboard in a real browser against a lab + daemon: sign in with a token, every lab guest
shown, a sparkline moving with the `stats` events, a wake clicked and followed live to ready, a
journal pane with lines arriving, and a read-only token shown no power buttons."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

from .conftest import ADMIN_TOKEN, READ_TOKEN, Stack, js, wait_dom

# vmids 7411-7419: this module's.
GUESTS: list[dict[str, Any]] = [
    {"vmid": 7411, "name": "wiki", "status": "running", "tags": ("lab", "web")},
    {"vmid": 7412, "name": "sleeper", "boot_time_s": 1.0},
    {"vmid": 7413, "name": "db", "type": "qemu", "status": "running", "node": "pve2"},
    {"vmid": 7414, "name": "spare", "route": False},
]
POWER_ACTIONS = ("wake", "start", "shutdown", "stop", "reboot")


def sign_in(driver: WebDriver, stack: Stack, token: str) -> None:
    driver.get(f"{stack.api}/ui/")
    wait_dom(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "the sign-in form")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-submit").click()
    wait_dom(driver, lambda d: d.find_element(By.ID, "main").is_displayed(), "the dashboard")
    # The token is in this tab's session storage, not in the URL or a cookie.
    assert js(driver, "sessionStorage.getItem('pxproxy.token')") == token
    assert token not in driver.current_url
    assert driver.get_cookies() == []


def row(driver: WebDriver, ref: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#guests tbody tr[data-guest="{ref}"]')


def rows_shown(driver: WebDriver) -> set[str]:
    return {
        tr.get_attribute("data-guest") or ""
        for tr in driver.find_elements(By.CSS_SELECTOR, "#guests tbody tr[data-guest]")
    }


def scroll_to(driver: WebDriver, css: str) -> None:
    """Bring a pane into the window for the screenshot."""
    driver.execute_script(
        "arguments[0].scrollIntoView()", driver.find_element(By.CSS_SELECTOR, css)
    )


def stream_live(driver: WebDriver) -> bool:
    return driver.find_element(By.ID, "stream").get_attribute("data-state") == "live"


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(GUESTS)


def test_sign_in_and_see_every_guest_with_a_moving_sparkline(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    browser.set_window_size(1280, 1400)
    try:
        sign_in(browser, stack, ADMIN_TOKEN)
        every = {f"lab:{g['vmid']}" for g in GUESTS}
        wait_dom(browser, lambda d: rows_shown(d) == every, "a row for every lab guest")
        # The name cell holds the name and nothing else.
        assert row(browser, "lab:7411").find_element(By.CSS_SELECTOR, "td.name").text == "wiki"
        tags = [t.text for t in row(browser, "lab:7411").find_elements(By.CLASS_NAME, "tag")]
        assert tags == ["lab", "web"]
        assert row(browser, "lab:7412").get_attribute("data-state") == "stopped"
        assert row(browser, "lab:7413").get_attribute("data-state") == "running"
        wait_dom(browser, stream_live, "the live event stream")
        assert "admin" in browser.find_element(By.ID, "whoami").text
        # A `stats` event after each poll adds a point: the running guest's SVG changes.
        line = '#guests tbody tr[data-guest="lab:7411"] svg.spark-cpu polyline'

        def points() -> str:
            return browser.find_element(By.CSS_SELECTOR, line).get_attribute("points") or ""

        before = points()
        wait_dom(browser, lambda d: points() != before, "the CPU sparkline to move")
        after = points()
        wait_dom(browser, lambda d: points() != after, "the CPU sparkline to move again")
        assert len(points().split()) >= 3
        shot("signed-in")
        # The theme button: auto, then dark.
        browser.find_element(By.ID, "theme-toggle").click()
        assert js(browser, "document.documentElement.dataset.theme") == "dark"
        shot("dark")
    finally:
        browser.set_window_size(1280, 900)


def test_wake_a_sleeping_guest_and_watch_it_become_ready(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    wait_dom(browser, stream_live, "the live event stream")
    route = f'#routes tbody tr[data-route="{stack.host("sleeper")}"]'
    wait_dom(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, route).get_attribute("data-state") == "asleep",
        "the sleeping guest's route, asleep",
    )
    js(browser, "window.__same_page = true")  # gone if the page reloads
    button = row(browser, "lab:7412").find_element(By.CSS_SELECTOR, 'button[data-action="wake"]')
    button.click()
    wait_dom(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, route).get_attribute("data-state") == "waking",
        "the route to show waking",
    )
    scroll_to(browser, "#guests-pane")
    shot("waking")
    wait_dom(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, route).get_attribute("data-state") == "ready",
        "the route to become ready",
    )
    wait_dom(
        browser,
        lambda d: row(d, "lab:7412").get_attribute("data-state") == "running",
        "the guest's row to show it running",
    )
    task = browser.find_element(By.CSS_SELECTOR, "#tasks li[data-task]")
    wait_dom(browser, lambda d: task.get_attribute("data-state") == "ok", "the wake task to end ok")
    assert "ready" in task.text
    assert js(browser, "window.__same_page") is True
    scroll_to(browser, "#guests-pane")
    shot("ready")


def test_a_journal_pane_follows_a_node(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    sign_in(browser, stack, ADMIN_TOKEN)
    target = wait_dom(
        browser,
        lambda d: [
            o
            for o in Select(d.find_element(By.ID, "journal-target")).options
            if o.get_attribute("value") == "node:lab:pve1"
        ],
        "the node among the journal targets",
    )
    assert target
    Select(browser.find_element(By.ID, "journal-target")).select_by_value("node:lab:pve1")
    browser.find_element(By.ID, "journal-start").click()
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "journal").text.strip(),
        "the journal's first lines",
    )
    # A line written now arrives while the pane follows.
    line = "pxproxy-browser-test: a line written while the pane follows"
    stack.loop.call(lambda: stack.lab.journals.node("pve1").append("pxtest", line))
    wait_dom(
        browser, lambda d: line in d.find_element(By.ID, "journal").text, "the new journal line"
    )
    assert "following" in browser.find_element(By.ID, "journal-state").text
    scroll_to(browser, "#journal-pane")
    shot("journal")
    browser.find_element(By.ID, "journal-stop").click()
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "journal-state").text == "stopped",
        "the follow to stop",
    )


def test_a_read_only_token_sees_no_power_buttons(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    sign_in(browser, stack, READ_TOKEN)
    wait_dom(browser, lambda d: len(rows_shown(d)) == len(GUESTS), "every guest's row")
    wait_dom(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#routes tbody tr[data-route]"),
        "the routes",
    )
    wait_dom(browser, stream_live, "the live event stream")
    for action in POWER_ACTIONS:
        assert browser.find_elements(By.CSS_SELECTOR, f'button[data-action="{action}"]') == []
    assert not browser.find_element(By.ID, "exec-pane").is_displayed()
    # And the API refuses the power action from this token all the same.
    status = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch("../api/v1/guests/lab:7412/start", {method: "POST",
              headers: {Authorization: "Bearer " + sessionStorage.getItem("pxproxy.token")}})
          .then((r) => done(r.status), (e) => done(String(e)));"""
    )
    assert status == 403
    shot("read-only")
