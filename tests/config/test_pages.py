"""`proxy.pages` and a route's `page:`: what is refused, and where the error points."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.pages.document import PageLook
from pxproxy.reload import plan
from pxproxy.routing.notes import NotesError, parse_notes

from .helpers import MINIMAL, parse, problems_of

GOOD = '<h1 id="title">$title</h1><script>$page_script</script>'


def with_pages(block: str) -> str:
    return MINIMAL + "proxy:\n  pages:\n" + "".join(f"    {line}\n" for line in block.splitlines())


def with_route_page(page: str) -> str:
    return (
        MINIMAL
        + f"routes:\n  - host: wiki.test\n    guest: lab:7345\n    port: 80\n    page: {page}\n"
    )


def test_a_theme_and_a_template_file(tmp_path: Path) -> None:
    template = tmp_path / "page.html"
    template.write_text(GOOD)
    config = parse(with_pages(f"theme: paper\ntemplate: {template}"))
    pages = config.proxy.pages.pages()
    assert pages.theme == "paper"
    assert '<h1 id="title">Starting x</h1>' in pages.loading(
        PageLook("x", "x"),
        host="h",
        state="waking",
        step="starting",
        error=None,
        elapsed_s=None,
        events_url="/e",
        heartbeat_s=15,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the template"),
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"<p>$bogus</p>", "unknown placeholder $bogus"),
        (b'<a href="$title">', "line 1: $title cannot be used in a URL attribute"),
        (b"x" * (256 * 1024 + 1), "larger than"),
    ],
)
def test_a_bad_template_is_a_config_error_at_its_key(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    template = tmp_path / "page.html"
    if content is not None:
        template.write_bytes(content)
    [line] = problems_of(with_pages(f"template: {template}"))
    assert line.startswith("proxy.pages.template: ")
    assert expected in line


def test_an_unknown_theme_is_refused() -> None:
    [line] = problems_of(with_pages("theme: neon"))
    assert line.startswith("proxy.pages.theme")


@pytest.mark.parametrize(
    ("page", "key"),
    [
        ("{logo: 'javascript:alert(1)'}", "logo"),
        ("{logo: 'data:text/html;base64,PHNjcmlwdD4='}", "logo"),
        ("{logo: '//evil.test/x.png'}", "logo"),
        ("{logo: 'https://x.test/a.png\" onerror=\"alert(1)'}", "logo"),
        ("{accent: 'red;}</style><script>alert(1)</script>'}", "accent"),
        ("{accent: 'url(https://x.test/)'}", "accent"),
        ("{accent: 'red; background: url(x)'}", "accent"),
        ("{title: ''}", "title"),
        ('{title: "a\\nb"}', "title"),
        ("{size: 3}", "size"),
    ],
)
def test_bad_route_page_settings_are_refused(page: str, key: str) -> None:
    lines = problems_of(with_route_page(page))
    assert any(line.startswith(f"routes[0].page.{key}") for line in lines), lines


@pytest.mark.parametrize(
    "accent", ["#e57000", "#abc", "#aabbccdd", "rgb(229 112 0)", "hsla(30, 100%, 45%, .8)", "teal"]
)
def test_css_colours_are_accepted(accent: str) -> None:
    route = RouteConfig.model_validate(
        {"host": "a.test", "guest": "lab:7346", "port": 80, "page": {"accent": accent}}
    )
    assert route.page is not None
    assert route.page.accent == accent


def test_good_route_page_settings() -> None:
    logo = "data:image/png;base64,iVBORw0KGgo="
    config = parse(with_route_page(f"{{title: Wiki, logo: '{logo}', accent: '#0a7'}}"))
    page = config.routes[0].page
    assert page is not None
    assert (page.title, page.logo, page.accent) == ("Wiki", logo, "#0a7")
    look = page.look("lab:7345")
    assert (look.name, look.guest) == ("Wiki", "lab:7345")


def test_listen_routes_have_no_pages() -> None:
    with pytest.raises(ValueError, match="page settings are for host routes"):
        RouteConfig.model_validate(
            {"listen": "127.0.0.1:7347", "guest": "lab:7347", "port": 22, "page": {"title": "x"}}
        )


def test_notes_may_set_a_page_and_are_checked_alike() -> None:
    notes = (
        "```yaml\npxproxy:\n  host: game.test\n  port: 80\n"
        "  page: {title: Game, accent: '#f0a'}\n```\n"
    )
    [route] = parse_notes(notes, "lab:7348")
    assert route.page is not None
    assert route.page.title == "Game"
    with pytest.raises(NotesError, match=r"page\.logo"):
        parse_notes(notes.replace("accent: '#f0a'", "logo: 'javascript:alert(1)'"), "lab:7348")


def test_a_reload_swaps_an_edited_template_without_a_restart(tmp_path: Path) -> None:
    template = tmp_path / "page.html"
    template.write_text(GOOD)
    text = with_pages(f"theme: paper\ntemplate: {template}")
    old = parse(text)
    assert plan(old, parse(text)).noop
    template.write_text("<p>$title</p>")  # only the template changed, not the config
    new = parse(text)
    change = plan(old, new)
    assert (change.changed, change.restart) == (("proxy.pages",), ())
    assert change.config.proxy.pages.pages() == new.proxy.pages.pages()
    change = plan(old, parse(text.replace("paper", "midnight") + "  connect_timeout: 3\n"))
    assert change.changed == ("proxy.pages",)
    assert change.restart == ("proxy",)
