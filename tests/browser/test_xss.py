"""The XSS corpus in a real browser: hostile text from Proxmox (guest names, tags, notes, task
errors, journal lines) is shown as text by the dashboard and the pages, and runs no script.

Each payload, if it ran, would set window.__xss or open a dialog (the browser fixture traps
alert/confirm/prompt and counts them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from .conftest import ADMIN_TOKEN, DOMAIN, Stack, js, no_alert_opened, wait_dom
from .test_dashboard import rows_shown, sign_in

# vmids 7420-7439: this module's.
SCRIPT = "<script>window.__xss=1</script>"
IMG = '"><img src=x onerror="window.__xss=1">'
ALERT = "'><svg onload=alert(1)><img src=y onerror=alert(2)>"
CORPUS = (SCRIPT, IMG, ALERT)
FAILING = 7420
NAMED = 7421  # its name is the <script> payload; a VM with no address (an error page)
TAGGED = 7422  # its name is the <img onerror> payload, its tags the whole corpus
NOTED = 7423  # its notes declare a route whose page title is hostile
BAD_NOTES = 7424  # its notes are invalid: the route error quotes them
WAKE_FAILS = 7425  # a start that fails with a hostile Proxmox error
# Markup that would exist only if a payload had been parsed as HTML.
INJECTED = "img[src='x'], img[src='y'], svg[onload], [onerror], [onload]"


def assert_no_script_ran(driver: WebDriver) -> None:
    assert js(driver, "typeof window.__xss") == "undefined"
    assert no_alert_opened(driver)
    # The CSP would stop an injected handler from running: no markup was made from text either.
    assert driver.find_elements(By.CSS_SELECTOR, INJECTED) == []


def notes(body: str) -> str:
    return f"Hostile notes {IMG}\n\n```yaml\npxproxy:\n{body}```\n"


HOSTILE_GUESTS = [
    # Odd vmid, no static address and no agent: pxproxy learns no address for it.
    {"vmid": NAMED, "name": SCRIPT, "type": "qemu", "status": "running", "agent": False},
    {"vmid": TAGGED, "name": IMG, "status": "running", "tags": ("lab", SCRIPT, IMG, ALERT)},
    {
        "vmid": NOTED,
        "name": "noted",
        "tags": ("pxproxy",),
        "route": False,
        "description": notes(
            f"  host: noted.{DOMAIN}\n  port: 8080\n  idle: {{timeout: 1m}}\n"
            f"  page: {{title: '{SCRIPT} {IMG}'}}\n"
        ),
    },
    {
        "vmid": BAD_NOTES,
        "name": "badnotes",
        "status": "running",
        "tags": ("pxproxy",),
        "route": False,
        "description": notes(f"  host: '{SCRIPT}'\n  port: 8080\n"),
    },
    {"vmid": WAKE_FAILS, "name": "wakefails"},
]


def test_a_hostile_task_error_on_the_failure_page(
    browser: WebDriver, stack_factory: Callable[..., Stack], shot: Callable[[str], Path]
) -> None:
    stack = stack_factory([{"vmid": FAILING, "name": "failing"}])
    message = " ".join(CORPUS)
    stack.loop.call(lambda: stack.lab.fail_start(FAILING, message))
    browser.get(stack.route("failing"))
    wait_dom(
        browser,
        lambda d: SCRIPT in d.find_element(By.ID, "error").text,
        "the task error, shown as text",
    )
    for payload in CORPUS:
        assert payload in browser.find_element(By.ID, "error").text
    assert_no_script_ran(browser)
    shot("failure-page")


def test_hostile_text_in_the_dashboard_and_its_pages(
    browser: WebDriver, stack_factory: Callable[..., Stack], shot: Callable[[str], Path]
) -> None:
    stack = stack_factory(HOSTILE_GUESTS)
    stack.loop.call(lambda: stack.lab.fail_start(WAKE_FAILS, f"TASK ERROR: {IMG} {SCRIPT}"))
    line = f"kernel: {SCRIPT} {IMG} {ALERT}"
    browser.set_window_size(1280, 1600)
    try:
        sign_in(browser, stack, ADMIN_TOKEN)
        every = {f"lab:{g['vmid']}" for g in HOSTILE_GUESTS}
        wait_dom(browser, lambda d: rows_shown(d) == every, "every hostile guest's row")
        names = {
            tr.get_attribute("data-guest"): tr.find_element(By.CLASS_NAME, "guest-name").text
            for tr in browser.find_elements(By.CSS_SELECTOR, "#guests tbody tr[data-guest]")
        }
        # Shown as the very text Proxmox holds.
        assert names[f"lab:{NAMED}"] == SCRIPT
        assert names[f"lab:{TAGGED}"] == IMG
        tags = browser.find_element(
            By.CSS_SELECTOR, f'#guests tbody tr[data-guest="lab:{TAGGED}"] td.tags'
        ).text
        assert "<script>window.__xss=1</script>" in tags
        # The notes' route error and the notes' route, once the notes are read.
        route_error = wait_dom(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#routes tr.route-error"),
            "the invalid notes' route error",
        )
        assert SCRIPT in route_error[0].text
        wait_dom(
            browser,
            lambda d: d.find_elements(By.CSS_SELECTOR, f'#routes tr[data-route="noted.{DOMAIN}"]'),
            "the route the notes declare",
        )
        # A Proxmox task error, through a wake clicked in the dashboard.
        browser.find_element(
            By.CSS_SELECTOR, f'#guests tr[data-guest="lab:{WAKE_FAILS}"] button[data-action="wake"]'
        ).click()
        failed = wait_dom(
            browser,
            lambda d: [
                li
                for li in d.find_elements(By.CSS_SELECTOR, "#tasks li[data-task]")
                if li.get_attribute("data-state") == "failed"
            ],
            "the failed wake's task",
        )
        assert SCRIPT in failed[0].text
        # A journal line.
        Select(browser.find_element(By.ID, "journal-target")).select_by_value("node:lab:pve1")
        browser.find_element(By.ID, "journal-start").click()
        wait_dom(
            browser, lambda d: d.find_element(By.ID, "journal").text.strip(), "the journal's lines"
        )
        stack.loop.call(lambda: stack.lab.journals.node("pve1").append("kernel", line))
        wait_dom(
            browser, lambda d: SCRIPT in d.find_element(By.ID, "journal").text, "the hostile line"
        )
        assert_no_script_ran(browser)
        shot("dashboard")
    finally:
        browser.set_window_size(1280, 900)
    # The loading page of the route the notes declared: its hostile title, as text.
    browser.get(f"http://noted.{DOMAIN}:{stack.daemon.proxy_port}/")
    assert f"{SCRIPT} {IMG}" in browser.find_element(By.ID, "title").text  # as served
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "heartbeat").get_attribute("class") == "alive",
        "a message on the page's event stream",
    )
    # As the page script sets it again from its data, once the stream spoke.
    assert f"{SCRIPT} {IMG}" in browser.find_element(By.ID, "title").text
    assert f"{SCRIPT} {IMG}" in browser.title
    assert_no_script_ran(browser)
    shot("notes-route-page")
    # The error page (502, no address) of the route to the guest named <script>.
    browser.get(stack.route(f"guest{NAMED}"))
    assert js(browser, "document.documentElement.dataset.page") == "error"
    assert "has no IP address" in browser.find_element(By.ID, "error").text
    assert_no_script_ran(browser)
    shot("error-page")
