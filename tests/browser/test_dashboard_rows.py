"""A `guests` event touches only the rows of the guests it names: a changed row is refilled in
place, moved only when its sort key moved it, a new guest is inserted where the sort and the
filter put it, a vanished one is removed, and every other row is left alone (a MutationObserver
on the table counts what changed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from .conftest import ADMIN_TOKEN, Stack, js, wait_dom
from .test_dashboard import sign_in

# vmids 7491-7499: this module's.
GUESTS: list[dict[str, Any]] = [
    {"vmid": 7491, "name": "alpha", "tags": ("keep",), "route": False},
    {"vmid": 7492, "name": "bravo", "tags": ("keep",), "route": False},
    {"vmid": 7493, "name": "charlie", "tags": ("keep",), "route": False},
    {"vmid": 7494, "name": "delta", "route": False},
]
# Every mutation under the table's body, by the guest row it happened in; `moved` holds the rows
# added to or removed from the body itself.
OBSERVE = """
const tbody = document.querySelector("#guests tbody");
window.__touched = new Set();
window.__moved = [];
window.__observer = new MutationObserver((records) => {
  for (const r of records) {
    if (r.target === tbody) {
      for (const n of [...r.addedNodes, ...r.removedNodes]) window.__moved.push(n.dataset.guest);
    } else {
      const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
      window.__touched.add(node.closest("tr[data-guest]").dataset.guest);
    }
  }
});
window.__observer.observe(tbody, {childList: true, subtree: true, attributes: true,
                                  characterData: true});
"""


def order(driver: WebDriver) -> list[str]:
    return list(
        js(driver, "[...document.querySelectorAll('#guests tbody tr')].map(t => t.dataset.guest)")
    )


def observe(driver: WebDriver) -> None:
    driver.execute_script("if (window.__observer) window.__observer.disconnect();" + OBSERVE)


def touched(driver: WebDriver) -> tuple[set[str], set[str]]:
    """(rows changed inside, rows added to or removed from the table) since `observe`."""
    inside = set(js(driver, "[...window.__touched]"))
    moved = set(js(driver, "window.__moved"))
    return inside | moved, moved


def name_of(driver: WebDriver, ref: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, f'#guests tbody tr[data-guest="{ref}"] td.name')
    return found[0].text if found else ""


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory(GUESTS)


def test_a_guests_event_updates_only_its_rows(browser: WebDriver, stack: Stack) -> None:
    cluster = stack.lab.cluster
    sign_in(browser, stack, ADMIN_TOKEN)
    everyone = [f"lab:{g['vmid']}" for g in GUESTS]
    wait_dom(browser, lambda d: sorted(order(d)) == everyone, "a row for every guest")
    browser.find_element(By.CSS_SELECTOR, '#guests thead button[data-sort="name"]').click()
    assert order(browser) == ["lab:7491", "lab:7492", "lab:7493", "lab:7494"]

    # A rename that moves the row: only that row is taken out and put back, at its new place.
    observe(browser)
    stack.loop.call(lambda: setattr(cluster.guests[7493], "name", "aardvark"))
    wait_dom(browser, lambda d: name_of(d, "lab:7493") == "aardvark", "the renamed row")
    assert order(browser) == ["lab:7493", "lab:7491", "lab:7492", "lab:7494"]
    assert touched(browser) == ({"lab:7493"}, {"lab:7493"})

    # A change that keeps the sort key: refilled in place, no row moved.
    observe(browser)
    stack.loop.call(lambda: setattr(cluster.guests[7492], "tags", ("keep", "new")))
    tags = '#guests tbody tr[data-guest="lab:7492"] .tag'
    wait_dom(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, tags)) == 2, "the new tag")
    assert order(browser) == ["lab:7493", "lab:7491", "lab:7492", "lab:7494"]
    assert touched(browser) == ({"lab:7492"}, set())

    # Under a filter, a new guest that matches goes in its sorted place; one that does not is
    # not shown, and the count says so.
    browser.find_element(By.ID, "guest-filter").send_keys("keep")
    wait_dom(browser, lambda d: len(order(d)) == 3, "the filter to apply")
    observe(browser)

    def add() -> None:
        cluster.add_guest(7495, "lxc", "beta", "pve1", tags=("keep",))
        cluster.add_guest(7496, "lxc", "bingo", "pve1")

    stack.loop.call(add)
    wait_dom(browser, lambda d: "lab:7495" in order(d), "the new guest's row")
    wait_dom(
        browser,
        lambda d: d.find_element(By.ID, "guest-count").text == "4 of 6",
        "the count with the guest the filter hides",
    )
    assert order(browser) == ["lab:7493", "lab:7491", "lab:7495", "lab:7492"]
    assert touched(browser) == ({"lab:7495"}, {"lab:7495"})

    # A change that makes a shown guest fail the filter takes only its row out.
    observe(browser)
    stack.loop.call(lambda: setattr(cluster.guests[7491], "tags", ()))
    wait_dom(browser, lambda d: "lab:7491" not in order(d), "the row the filter now hides")
    assert order(browser) == ["lab:7493", "lab:7495", "lab:7492"]
    assert touched(browser)[1] == {"lab:7491"}

    # A guest gone from the cluster: its row goes, nothing else is touched.
    observe(browser)
    stack.loop.call(lambda: cluster.guests.pop(7492))
    wait_dom(browser, lambda d: "lab:7492" not in order(d), "the removed guest's row gone")
    assert order(browser) == ["lab:7493", "lab:7495"]
    assert touched(browser) == ({"lab:7492"}, {"lab:7492"})
    assert browser.find_element(By.ID, "guest-count").text == "2 of 5"

    # Clearing the filter redraws all, in the sort order, from the state the events built.
    browser.find_element(By.ID, "guest-filter").clear()
    browser.execute_script(
        "document.getElementById('guest-filter').dispatchEvent(new Event('input'))"
    )
    wait_dom(browser, lambda d: len(order(d)) == 5, "every guest again")
    assert order(browser) == ["lab:7493", "lab:7491", "lab:7495", "lab:7496", "lab:7494"]


def options(driver: WebDriver, select_id: str) -> list[str]:
    return list(js(driver, f"[...document.getElementById('{select_id}').options].map(o => o.text)"))


def test_the_journal_and_exec_lists_follow_guests_events(
    stack_factory: Callable[..., Stack], browser: WebDriver
) -> None:
    stack = stack_factory(
        [
            {"vmid": 7497, "name": "echo", "status": "running", "route": False},
            {"vmid": 7498, "name": "foxtrot", "status": "running", "route": False},
            {"vmid": 7499, "name": "golf", "status": "running", "route": False},
        ]
    )
    cluster = stack.lab.cluster

    async def power(action: str, vmid: int) -> None:
        # On the lab's loop: a lab task runs there.
        await (cluster.stop if action == "stop" else cluster.start)(vmid).wait()

    sign_in(browser, stack, ADMIN_TOKEN)
    wait_dom(
        browser, lambda d: len(options(d, "exec-guest")) == 3, "every running guest to exec in"
    )
    # Stopped: gone from both lists; renamed: its option says the new name, in the same place.
    stack.loop.run(power("stop", 7498))
    stack.loop.call(lambda: setattr(cluster.guests[7499], "name", "hotel"))
    wait_dom(
        browser,
        lambda d: options(d, "exec-guest") == ["lab:7497 echo", "lab:7499 hotel"],
        "the exec list without the stopped guest, with the new name",
    )
    guests = [o for o in options(browser, "journal-target") if o.startswith("guest ")]
    assert guests == ["guest lab:7497 echo", "guest lab:7499 hotel"]
    # Started again: back between the other two, where a full redraw would put it.
    stack.loop.run(power("start", 7498))
    wait_dom(
        browser,
        lambda d: (
            options(d, "exec-guest") == ["lab:7497 echo", "lab:7498 foxtrot", "lab:7499 hotel"]
        ),
        "the restarted guest back in its place",
    )
    guests = [o for o in options(browser, "journal-target") if o.startswith("guest ")]
    assert guests == ["guest lab:7497 echo", "guest lab:7498 foxtrot", "guest lab:7499 hotel"]
