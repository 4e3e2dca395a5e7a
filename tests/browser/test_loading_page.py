"""The loading page in a real browser: a sleeping guest's route, loaded through the proxy the way
Chromium asks for it (Accept: text/html), shows the wake's stages and elapsed time as they
advance and turns into the guest when it is ready; each theme; the failure page."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from pxproxy.pages.themes import THEMES

from .conftest import Stack, js, wait_dom

# vmids 7401-7409: this module's (the lab derives guest addresses from vmids).
SLEEPY = 7401
BROKEN = 7402
THEMED = 7403


def current_stage(driver: WebDriver) -> str | None:
    items = driver.find_elements(By.CSS_SELECTOR, "#stages li.current")
    return items[0].get_attribute("data-stage") if items else None


def shows_guest(name: str) -> Callable[[WebDriver], bool]:
    """The guest's own answer (the lab's servers start their body with the guest's name)."""
    return lambda d: bool(
        js(d, f"document.body !== null && document.body.innerText.startsWith({name!r})")
    )


def test_the_page_follows_a_wake_and_becomes_the_guest(
    browser: WebDriver, stack_factory: Callable[..., Stack], shot: Callable[[str], Path]
) -> None:
    # The port stays shut after the start task ends: the port stage is there to be seen.
    stack = stack_factory([{"vmid": SLEEPY, "name": "sleepy", "boot_time_s": 1.5}], held=(SLEEPY,))
    browser.get(stack.route("sleepy"))
    assert browser.find_element(By.ID, "title").text == "Starting sleepy"
    assert "sleepy.browser.localhost" in browser.find_element(By.ID, "host").text
    wait_dom(browser, lambda d: current_stage(d) == "starting", "the starting stage")
    assert js(browser, "document.documentElement.dataset.page") == "loading"
    shot("starting")
    # The clock runs: seconds since the wake began, m:ss.
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "elapsed").text not in ("", "0:00"),
        "the elapsed time to advance",
    )
    first = browser.find_element(By.ID, "elapsed").text
    wait_dom(browser, lambda d: current_stage(d) == "port", "the port stage")
    assert (
        browser.find_element(By.CSS_SELECTOR, '#stages li[data-stage="starting"]').get_attribute(
            "class"
        )
        == "done"
    )
    # An address first (from the poll), then the port itself.
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "step").text == "Waiting for the port…",
        "the step to say it waits for the port",
    )
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "elapsed").text > first,
        "the elapsed time to go on advancing",
    )
    wait_dom(
        browser,
        lambda d: "alive" in (d.find_element(By.ID, "heartbeat").get_attribute("class") or ""),
        "the stream to be live",
    )
    shot("waiting-for-port")
    assert stack.loop.run(stack.ports.release(SLEEPY))
    # Ready: the page reloads itself, and the reload is the guest's own answer.
    wait_dom(browser, shows_guest("sleepy"), "the guest's own page after the reload")
    assert browser.current_url == stack.route("sleepy")
    shot("guest")


@pytest.mark.parametrize("theme", THEMES)
def test_each_theme(
    theme: str,
    browser: WebDriver,
    stack_factory: Callable[..., Stack],
    shot: Callable[[str], Path],
) -> None:
    stack = stack_factory(
        [{"vmid": THEMED, "name": "themed"}],
        proxy={"pages": {"theme": theme}},
        route_extra={"themed": {"page": {"title": "Team wiki", "accent": "#3b82f6"}}},
        held=(THEMED,),
    )
    browser.get(stack.route("themed"))
    assert js(browser, "document.documentElement.dataset.theme") == theme
    assert browser.find_element(By.ID, "title").text == "Starting Team wiki"
    # The route's accent colours the current stage's marker.
    wait_dom(browser, lambda d: current_stage(d) == "port", "the port stage")
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "elapsed").text not in ("", "0:00"),
        "the elapsed time to advance",
    )
    accent = js(
        browser, "getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()"
    )
    assert accent == "#3b82f6"
    shot("loading")
    assert stack.loop.run(stack.ports.release(THEMED))
    wait_dom(browser, shows_guest("themed"), "the guest after the reload")


def test_a_failed_start_says_so(
    browser: WebDriver, stack_factory: Callable[..., Stack], shot: Callable[[str], Path]
) -> None:
    stack = stack_factory([{"vmid": BROKEN, "name": "broken"}])
    stack.loop.call(lambda: stack.lab.fail_start(BROKEN, "disk 'local-lvm:vm-7402' is missing"))
    browser.get(stack.route("broken"))
    wait_dom(
        browser,
        lambda d: js(d, "document.documentElement.dataset.state") == "failed",
        "the page to turn to the failure",
    )
    error = wait_dom(browser, lambda d: d.find_element(By.ID, "error").text, "the error text")
    assert "local-lvm:vm-7402" in error
    # The heading tells the truth: no "Starting broken" above a failure.
    assert browser.find_element(By.ID, "title").text == "Could not start broken"
    assert browser.title == "Could not start broken"
    assert "could not be started" in browser.find_element(By.ID, "step").text
    failed = browser.find_elements(By.CSS_SELECTOR, "#stages li.failed")
    assert [li.get_attribute("data-stage") for li in failed] == ["starting"]
    assert browser.find_element(By.ID, "retry").is_displayed()
    shot("failed")
