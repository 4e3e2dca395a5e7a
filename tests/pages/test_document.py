"""The loading and error pages: each theme renders, the route's look and the wake's state show,
the heading tells the truth on failure, and nothing a guest or Proxmox says becomes markup."""

from __future__ import annotations

import json
import re

import pytest

from pxproxy.pages.document import PageLook, Pages, parse_template, stage_of
from pxproxy.pages.themes import THEMES, ThemeName

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'
IDS = ("title", "stages", "elapsed", "error", "heartbeat", "step")


def loading(pages: Pages, look: PageLook, **changes: object) -> str:
    values: dict[str, object] = {
        "host": "wiki.test",
        "state": "waking",
        "step": "waiting for the port",
        "error": None,
        "elapsed_s": 12.34,
        "events_url": "/.pxproxy/wake/events",
        "heartbeat_s": 15.0,
        **changes,
    }
    return pages.loading(look, **values)  # type: ignore[arg-type]


def page_data(page: str) -> dict[str, object]:
    """The data the page script is given (the JSON literal after the script)."""
    found = re.search(r"\}\)\((\{.*?\})\);</script>", page, re.S)
    assert found is not None
    data: dict[str, object] = json.loads(found.group(1))
    return data


@pytest.mark.parametrize("theme", THEMES)
def test_each_theme_renders_the_stable_elements(theme: ThemeName) -> None:
    page = loading(Pages(theme=theme), PageLook(name="Wiki", guest="lab:7341", accent="teal"))
    for element in IDS:
        assert f'id="{element}"' in page
    assert f'data-theme="{theme}"' in page
    assert "--accent: teal;" in page
    assert "prefers-color-scheme" in page  # dark and light aware
    assert "<link" not in page
    assert "://" not in page
    assert '<h1 id="title">Starting Wiki</h1>' in page
    assert 'data-current="port"' in page
    data = page_data(page)
    assert data["elapsed"] == 12.3
    assert data["heartbeat_s"] == 15.0
    assert data["failed_title"] == "Could not start Wiki"


def test_the_failure_heading_tells_the_truth() -> None:
    page = loading(
        Pages(), PageLook(name="broken", guest="lab:7342"), state="failed", error="TASK ERROR: x"
    )
    assert "Starting broken" not in page.split("<script>")[0]
    assert '<h1 id="title">Could not start broken</h1>' in page
    assert "<title>Could not start broken</title>" in page
    assert 'data-state="failed"' in page
    assert "TASK ERROR: x" in page


@pytest.mark.parametrize("where", ["name", "guest", "host", "step", "error"])
def test_nothing_from_a_guest_or_proxmox_becomes_markup(where: str) -> None:
    look = PageLook(name=EVIL if where == "name" else "n", guest=EVIL if where == "guest" else "g")
    changes = {where: EVIL} if where in ("host", "step", "error") else {}
    page = loading(Pages(), look, **changes)
    clean = loading(Pages(), PageLook(name="n", guest="g"))
    assert "<img src=x" not in page
    assert "<script>alert" not in page
    assert page.count("<") == clean.count("<")  # no tag more than the template's
    error_page = Pages().error(look, host=EVIL, status=404, title=EVIL, detail=EVIL)
    assert "<img src=x" not in error_page
    assert "<script>alert" not in error_page


def test_error_pages_show_the_problem_in_the_theme() -> None:
    page = Pages(theme="paper").error(
        None, host="nowhere.test", status=404, title="Not Found", detail="no route for host x"
    )
    assert 'data-page="error"' in page
    assert 'data-theme="paper"' in page
    assert '<h1 id="title">Not Found</h1>' in page
    assert '<p class="status" id="status">404</p>' in page
    assert '<div id="error" role="alert">no route for host x</div>' in page
    assert 'content=""' in page  # no refresh without a script: an error page stays


def test_a_custom_template_gets_the_placeholders() -> None:
    template = parse_template(
        "<html data-x='$theme'><style>$theme_css</style><h1 id=\"title\">$title</h1>"
        '<img src="$logo" alt="$name"><i>$guest $host $state $stage $step $status $elapsed</i>'
        "<b>$error</b><script>var events = $events_url; $page_script</script></html>"
    )
    look = PageLook(name="Wiki", guest="lab:7343", logo="https://x.test/logo.png", accent="red")
    page = loading(Pages(theme="midnight", template=template), look)
    assert "<html data-x='midnight'>" in page
    assert '<img src="https://x.test/logo.png" alt="Wiki">' in page
    assert "<i>lab:7343 wiki.test waking port Waiting for the port… 503 12.3</i>" in page
    assert 'var events = "/.pxproxy/wake/events";' in page
    assert "--accent: red;" in page


def test_stages_follow_the_steps() -> None:
    assert stage_of("waking", "starting") == "starting"
    assert stage_of("waking", "waking lab:7344") == "starting"
    assert stage_of("waking", "waiting for an address") == "port"
    assert stage_of("waking", "waiting for the port") == "port"
    assert stage_of("ready", "ready") == "ready"
    assert stage_of("failed", "TASK ERROR") == "failed"
