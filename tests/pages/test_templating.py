"""The templater: every value escaped for where it lands, and placeholders refused where no
escaping would make them safe."""

from __future__ import annotations

import pytest

from pxproxy.pages.templating import Kind, TemplateError, js_literal, parse

KINDS: dict[str, Kind] = {
    "title": "text",
    "logo": "url",
    "accent": "css",
    "theme_css": "css",
    "status": "number",
    "page_script": "script",
}
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "'><svg onload=alert(1)>")


@pytest.mark.parametrize("payload", XSS)
def test_values_are_escaped_in_text_attributes_and_scripts(payload: str) -> None:
    template = parse(
        "<title>$title</title><p title=\"$title\">$title</p><p title='${title}'>"
        "<script>var t = $title;</script><!-- $title -->",
        KINDS,
    )
    out = template.render({"title": payload})
    empty = template.render({"title": ""})
    # No tag or quote of the value's survives (but escaped in the script's JSON string): the
    # markup is the template's alone.
    for mark in ("<", ">", '"', "'"):
        extra = out.count(mark) - empty.count(mark)
        in_script = js_literal(payload).count(mark) - js_literal("").count(mark)
        assert extra == (in_script if mark in "\"'" else 0), mark
    assert "var t = " + js_literal(payload) + ";" in out
    assert "</script>" not in js_literal("</script><script>alert(1)</script>")
    assert js_literal("\u2028") == '"\\u2028"'


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ('<a href="$title">', "URL attribute"),
        ('<img src="$title">', "URL attribute"),
        ('<svg><a xlink:href="$title">', "URL attribute"),
        ('<meta http-equiv="refresh" content="0;url=$title">', "URL attribute"),
        ("<div class=$title>", "quoted attribute"),
        ("<div $title>", "quoted attribute"),
        ('<div onclick="go($title)">', "attribute onclick"),
        ('<iframe srcdoc="$title">', "attribute srcdoc"),
        ("<style>h1::after { content: '$title' }</style>", "in a style"),
        ('<p style="color: $title">', "style attribute"),
        ("<p>$theme_css</p>", "inside <style>"),
        ("<p>$page_script</p>", "in a text"),
        ("<p>$nope</p>", "unknown placeholder $nope"),
    ],
)
def test_unsafe_places_and_unknown_names_are_refused(source: str, why: str) -> None:
    with pytest.raises(TemplateError, match="line 1") as info:
        parse(source, KINDS)
    assert why in str(info.value)


def test_line_numbers_dollars_and_the_trusted_placeholders() -> None:
    with pytest.raises(TemplateError, match="line 3"):
        parse("<p>\n$title\n<a href='$title'>", KINDS)
    template = parse(
        '<style>$theme_css</style><p style="color: $accent">$$5 $(x)</p>'
        '<img src="$logo" alt="$status"><script>$page_script</script>',
        KINDS,
    )
    out = template.render(
        {
            "theme_css": "h1 > b { color: red }",
            "accent": "#123456",
            "logo": "https://x.test/a.png?a=1&b=2",
            "status": 503,
            "page_script": "go();",
        }
    )
    assert out == (
        '<style>h1 > b { color: red }</style><p style="color: #123456">$5 $(x)</p>'
        '<img src="https://x.test/a.png?a=1&amp;b=2" alt="503"><script>go();</script>'
    )


def test_css_and_number_values_are_checked_again_when_rendered() -> None:
    style = parse("<style>$theme_css</style>", KINDS)
    with pytest.raises(ValueError, match="cannot go into CSS"):
        style.render({"theme_css": "</style><script>alert(1)</script>"})
    attr = parse('<p style="color: $accent">', KINDS)
    with pytest.raises(ValueError, match="cannot go into CSS"):
        attr.render({"accent": 'red" onmouseover="alert(1)'})
    number = parse("<p>$status</p>", KINDS)
    with pytest.raises(ValueError, match="must be a number"):
        number.render({"status": "<b>"})
