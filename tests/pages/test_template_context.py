"""Review of issue 12: the templater's context classification can be fooled, so a placeholder
lands where the module promises to refuse it (an on* handler, an href, an unquoted attribute)."""

from __future__ import annotations

import pytest

from pxproxy.pages.document import parse_template
from pxproxy.pages.templating import TemplateError

# A path a browser sends as it is ( ' ( ) ; are not percent-encoded in a path): the 404 for an
# unknown /.pxproxy/ endpoint carries it in $error ("no pxproxy endpoint <path>").
HOSTILE_ERROR = "no pxproxy endpoint /.pxproxy/');alert(1)//"


def test_a_gt_in_an_earlier_quoted_value_does_not_let_a_placeholder_into_onclick() -> None:
    # Without the title, `onclick="...$error..."` is refused. With a `>` in an earlier quoted
    # value the placeholder is read as text, HTML-escaped, and the browser decodes &#x27;
    # back to ' before running the handler: go('no pxproxy endpoint /.pxproxy/');alert(1)//').
    with pytest.raises(TemplateError):
        parse_template("<button onclick=\"go('$error')\">x</button>")
    with pytest.raises(TemplateError):
        parse_template('<button title="a > b" onclick="go(\'$error\')">x</button>')


def test_a_gt_in_an_earlier_quoted_value_does_not_make_an_href_text() -> None:
    # A text placeholder in href is refused (URL context); after title="a>b" it is accepted.
    with pytest.raises(TemplateError):
        parse_template('<a href="$host">x</a>')
    with pytest.raises(TemplateError):
        parse_template('<a title="a>b" href="$host">x</a>')


@pytest.mark.parametrize(
    "before",
    ["<!-- no <script> here -->", '<div title="<script>"></div>'],
)
def test_script_named_in_a_comment_or_value_does_not_open_one(before: str) -> None:
    # The unquoted attribute alone is refused; after `<script` in a comment or attribute value
    # it is taken for a script, and the JSON literal's \" ends the attribute in HTML.
    with pytest.raises(TemplateError):
        parse_template("<a title=$error>x</a>")
    with pytest.raises(TemplateError):
        parse_template(f"{before}<a title=$error>x</a>")


@pytest.mark.parametrize("attribute", ["values", "to", "from", "by"])
def test_svg_animation_values_are_not_plain_attributes(attribute: str) -> None:
    # <animate attributeName="href" values="a;javascript:alert(1)"> makes the link's href a
    # javascript: URL; `;` passes through a path as it is, so $error can carry one.
    with pytest.raises(TemplateError):
        parse_template(
            f'<svg><a><animate attributeName="href" {attribute}="$error"/><text>x</text></a></svg>'
        )


def test_the_usual_places_still_parse() -> None:
    parse_template(
        "<title>$title</title><textarea>$name</textarea><!-- $host -->"
        '<noscript><meta http-equiv="refresh" content="$refresh"></noscript>'
        '<a title="a>b" href="$logo">x</a><img src="$logo" alt="">'
        "<script>var d = $error;</script><style>$theme_css</style><p>$error</p>"
    )


@pytest.mark.parametrize(
    "tag", ["<a title=$error>x</a>", "<a title=x$error>x</a>", "<a $error>x</a>"]
)
def test_unquoted_places_stay_refused(tag: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(tag)
