"""The dashboard's accessibility, as the issue asks it: usable at phone width (no horizontal
scroll, every guest and its power buttons inside the window) and with the keyboard alone
(sign in, reach and use a sort button and a power button by TAB, a visible focus ring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .conftest import ADMIN_TOKEN, Stack, js, wait_dom
from .test_dashboard import row, rows_shown, sign_in, stream_live

# vmids 7481-7489: this module's. Names out of vmid order, so a sort by name shows.
GUESTS: list[dict[str, Any]] = [
    {"vmid": 7481, "name": "zulu", "status": "running", "tags": ("lab", "web")},
    {"vmid": 7482, "name": "alpha", "boot_time_s": 0.5},
    {"vmid": 7483, "name": "mike", "type": "qemu", "status": "running", "node": "pve2"},
    {"vmid": 7484, "name": "bravo", "route": False},
]
EVERY = {f"lab:{g['vmid']}" for g in GUESTS}
# Enough for every focusable thing before the farthest target (header, filter, eight sort
# buttons, each row's buttons); a page that never gets there fails rather than loops.
MAX_TABS = 80
PHONE = (390, 844)
DESKTOP = (1280, 900)  # the browser fixture's own size, restored after a test changes it


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(GUESTS)


@pytest.fixture
def phone(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser at a phone's size; the desktop size back afterwards (the browser is the
    session's)."""
    browser.set_window_size(*PHONE)
    try:
        yield browser
    finally:
        browser.set_window_size(*DESKTOP)


def focused(driver: WebDriver) -> str:
    """The focused element, described for a failure message."""
    return str(
        js(
            driver,
            """(() => { const a = document.activeElement;
              if (!a) return "nothing";
              return a.outerHTML.slice(0, 160); })()""",
        )
    )


def tab_to(driver: WebDriver, css: str) -> None:
    """Press TAB from where the focus is until the element matching `css` has it."""
    for _ in range(MAX_TABS):
        if js(driver, f"document.activeElement?.matches({css!r}) || false"):
            return
        ActionChains(driver).send_keys(Keys.TAB).perform()
    if not js(driver, f"document.activeElement?.matches({css!r}) || false"):
        pytest.fail(f"{MAX_TABS} TABs never focused {css}; the focus is on {focused(driver)}")


def from_the_top(driver: WebDriver) -> None:
    """Put the keyboard at the page's start, as a fresh page has it."""
    js(driver, "(document.activeElement?.blur(), window.scrollTo(0, 0), true)")


def press(driver: WebDriver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def has_focus_ring(driver: WebDriver) -> bool:
    style = js(
        driver,
        """(() => { const s = getComputedStyle(document.activeElement);
          return [s.outlineStyle, s.outlineWidth, s.boxShadow]; })()""",
    )
    outline, width, shadow = style
    return (outline != "none" and width not in ("0px", "")) or shadow not in ("none", "")


def keyboard_sign_in(driver: WebDriver, stack: Stack, token: str) -> None:
    """Sign in with keys only: TAB to the token field, type it, ENTER."""
    driver.get(f"{stack.api}/ui/")
    wait_dom(driver, lambda d: d.find_element(By.ID, "token").is_displayed(), "the sign-in form")
    from_the_top(driver)
    tab_to(driver, "#token")
    assert has_focus_ring(driver), "the token field shows no focus"
    press(driver, token)
    press(driver, Keys.ENTER)
    wait_dom(driver, lambda d: d.find_element(By.ID, "main").is_displayed(), "the dashboard")
    assert js(driver, "sessionStorage.getItem('pxproxy.token')") == token


def inside_width(driver: WebDriver, css: str) -> list[str]:
    """The elements matching `css` that are not shown, or reach beyond the window's width."""
    return list(
        js(
            driver,
            f"""[...document.querySelectorAll({css!r})].filter((e) => {{
              const r = e.getBoundingClientRect();
              return !(r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= innerWidth);
            }}).map((e) => e.outerHTML.slice(0, 120) + " right=" +
                    e.getBoundingClientRect().right + " of " + innerWidth)""",
        )
    )


def test_at_phone_width_nothing_scrolls_sideways_and_every_control_fits(
    phone: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    sign_in(phone, stack, ADMIN_TOKEN)
    wait_dom(phone, lambda d: rows_shown(d) == EVERY, "a row for every lab guest")
    wait_dom(phone, stream_live, "the live event stream")
    # The window really is a phone's: the page's layout width, not just the outer window.
    assert js(phone, "innerWidth") <= PHONE[0], "the window did not shrink to a phone's width"
    for box in ("document.documentElement", "document.body"):
        scroll, client = js(phone, f"[{box}.scrollWidth, {box}.clientWidth]")
        assert scroll <= client, f"{box} scrolls sideways: {scroll}px in {client}px"
    # Every guest's row is shown, and its power buttons and the filter fit the width.
    for ref in EVERY:
        assert row(phone, ref).is_displayed(), f"{ref}'s row is not shown"
    buttons = "#guests tbody button[data-action]"
    assert len(phone.find_elements(By.CSS_SELECTOR, buttons)) >= 4 * len(GUESTS)
    assert inside_width(phone, buttons) == []
    assert inside_width(phone, "#guest-filter") == []
    assert inside_width(phone, "#guests thead button[data-sort]") == []
    shot("phone")


def test_sort_by_name_with_the_keyboard_alone(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    keyboard_sign_in(browser, stack, ADMIN_TOKEN)
    wait_dom(browser, lambda d: rows_shown(d) == EVERY, "a row for every lab guest")
    name_th = '#guests thead th:has(button[data-sort="name"])'
    assert browser.find_element(By.CSS_SELECTOR, name_th).get_attribute("aria-sort") == "none"
    from_the_top(browser)
    tab_to(browser, '#guests thead button[data-sort="name"]')
    assert has_focus_ring(browser), f"no visible focus on {focused(browser)}"
    press(browser, Keys.ENTER)
    wait_dom(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, name_th).get_attribute("aria-sort") == "ascending"
        ),
        "the Name column to say it sorts ascending",
    )

    def names() -> list[str]:
        cells = browser.find_elements(By.CSS_SELECTOR, "#guests tbody tr td.name .guest-name")
        return [c.text for c in cells]

    assert names() == sorted(g["name"] for g in GUESTS)
    # The focus stays on the button (the header is not re-rendered), ring and all.
    assert js(browser, "document.activeElement.dataset.sort") == "name"
    assert has_focus_ring(browser)
    shot("sorted")
    # ENTER again: descending.
    press(browser, Keys.ENTER)
    wait_dom(
        browser,
        lambda d: (
            d.find_element(By.CSS_SELECTOR, name_th).get_attribute("aria-sort") == "descending"
        ),
        "the Name column to sort descending",
    )
    assert names() == sorted((g["name"] for g in GUESTS), reverse=True)


def test_start_a_stopped_guest_with_the_keyboard_alone(
    browser: WebDriver, stack: Stack, shot: Callable[[str], Path]
) -> None:
    keyboard_sign_in(browser, stack, ADMIN_TOKEN)
    wait_dom(browser, lambda d: rows_shown(d) == EVERY, "a row for every lab guest")
    wait_dom(browser, stream_live, "the live event stream")
    assert row(browser, "lab:7484").get_attribute("data-state") == "stopped"
    assert browser.find_elements(By.CSS_SELECTOR, "#tasks li[data-state]") == []
    start = '#guests tbody button[data-action="start"][data-target="lab:7484"]'
    from_the_top(browser)
    tab_to(browser, start)
    assert has_focus_ring(browser), f"no visible focus on {focused(browser)}"
    shot("focused")
    press(browser, Keys.ENTER)
    task = wait_dom(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, "#tasks li[data-state]"),
        "a task entry for the start",
    )[0]
    assert "start lab:7484" in task.text
    wait_dom(browser, lambda d: task.get_attribute("data-state") == "ok", "the start to end ok")
    wait_dom(
        browser,
        lambda d: row(d, "lab:7484").get_attribute("data-state") == "running",
        "the guest's row to show it running",
    )
    # The row's buttons are made anew for the new state: focus moves to the next enabled one
    # (Start is disabled now), with its ring, rather than dropping to the page.
    wait_dom(
        browser,
        lambda d: js(
            d,
            "document.activeElement.matches('#guests tbody tr[data-guest=\"lab:7484\"] button')"
            " && !document.activeElement.disabled",
        ),
        "the focus on an enabled button of the started guest's row",
    )
    assert has_focus_ring(browser), f"no visible focus on {focused(browser)}"
    # And the keyboard keeps its place: the next TAB stays in the row.
    press(browser, Keys.TAB)
    assert js(browser, "document.activeElement.closest('tr')?.dataset.guest") == "lab:7484", (
        f"after the start, TAB went to {focused(browser)}"
    )
    shot("started")
