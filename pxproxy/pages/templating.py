"""A tiny templater that escapes every value for where it lands in the HTML.

`$name` or `${name}` is a placeholder, `$$` a literal `$`, and a `$` not followed by a name is
left as it is (so scripts may use `$(`). The template is parsed once: each placeholder's
context is found then (text, quoted attribute, URL attribute, <script>, <style>), and a
placeholder in a context where no escaping makes it safe (an unquoted attribute, an `on*`
handler, inside a tag) is refused with the line it is on. Rendering then only joins strings:

- text and quoted attributes: HTML-escaped, quotes included;
- URL attributes (href, src, content...): only URLs (checked by their source) and numbers;
- <script>: a JSON literal (quotes included), with `<`, `>`, `&` and U+2028/9 escaped;
- <style> and style="": only the CSS placeholders (validated colours, our own stylesheets);
- the script placeholder: our own page script, only inside <script>.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

Kind = Literal["text", "number", "url", "css", "script"]
Value = str | int | float | None
JsonValue = Value | dict[str, Value]


class TemplateError(ValueError):
    """The template cannot be used; the message says where and why."""


class Context(Enum):
    TEXT = "text"
    ATTR = "attribute"
    URL = "URL attribute"
    SCRIPT = "script"
    STYLE = "style"
    STYLE_ATTR = "style attribute"


_PLACEHOLDER = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_URL_ATTRS = frozenset(
    {"src", "action", "formaction", "poster", "srcset", "background", "cite", "data", "content"}
)
# Attributes whose value the browser reads as markup or code: no placeholder at all.
# (SVG animation's values, to, from and by set other attributes: an href to javascript:.)
_CODE_ATTRS = frozenset({"srcdoc", "values", "to", "from", "by", "attributename"})
_JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028"}
_JS_ESCAPES["\u2029"] = "\\u2029"
_JS_RE = re.compile("[<>&\u2028\u2029]")
_NAME = r"""[^\s"'<>/=]+"""


def js_literal(value: JsonValue) -> str:
    """`value` as a JSON literal that cannot end the <script> element it sits in."""
    return _JS_RE.sub(lambda m: _JS_ESCAPES[m.group(0)], json.dumps(value))


@dataclass(frozen=True, slots=True)
class _Slot:
    name: str
    kind: Kind
    context: Context


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders, alternating."""

    parts: tuple[str | _Slot, ...]

    def render(self, values: Mapping[str, Value]) -> str:
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name)
            if part.kind == "number" and not (value in (None, "") or _is_number(value)):
                raise ValueError(f"${part.name} must be a number, not {value!r}")
            if part.context is Context.SCRIPT:
                # The script placeholder is our own code: it goes in as it is.
                out.append(str(value) if part.kind == "script" else js_literal(value))
            elif part.context is Context.STYLE:
                out.append(_css(part.name, value, "<"))
            elif part.context is Context.STYLE_ATTR:
                out.append(_css(part.name, value, "<>&\"'"))
            else:
                out.append(html.escape("" if value is None else str(value), quote=True))
        return "".join(out)


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _css(name: str, value: Value, refused: str) -> str:
    """A CSS value (validated where it came from), checked once more for what would end it."""
    text = "" if value is None else str(value)
    if any(c in text for c in refused):
        raise ValueError(f"${name} holds one of {refused!r}, which cannot go into CSS there")
    return text


def parse(source: str, kinds: Mapping[str, Kind]) -> Template:
    """`source` parsed against the placeholders it may use (`kinds`: name → kind)."""
    parts: list[str | _Slot] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(source):
        literal = source[pos : match.start()]
        pos = match.end()
        if match.group(1):
            parts.append(literal + "$")
            continue
        name = match.group(2) or match.group(3)
        line = source.count("\n", 0, match.start()) + 1
        kind = kinds.get(name)
        if kind is None:
            known = ", ".join(f"${k}" for k in sorted(kinds))
            raise TemplateError(
                f"line {line}: unknown placeholder ${name} (known: {known}; $$ is a literal $)"
            )
        try:
            context = _context_at(source, match.start(), line)
        except _InValue as found:
            context = found.context
        _check(name, kind, context, line)
        parts.append(literal)
        parts.append(_Slot(name, kind, context))
    parts.append(source[pos:])
    return Template(tuple(p for p in parts if p != ""))


def _check(name: str, kind: Kind, context: Context, line: int) -> None:
    allowed: dict[Kind, tuple[Context, ...]] = {
        "text": (Context.TEXT, Context.ATTR, Context.SCRIPT),
        "number": (Context.TEXT, Context.ATTR, Context.URL, Context.SCRIPT),
        "url": (Context.TEXT, Context.ATTR, Context.URL, Context.SCRIPT),
        "css": (Context.STYLE, Context.STYLE_ATTR, Context.SCRIPT, Context.TEXT, Context.ATTR),
        "script": (Context.SCRIPT,),
    }
    if kind == "css" and name == "theme_css" and context is not Context.STYLE:
        raise TemplateError(f"line {line}: $theme_css belongs inside <style>")
    if context not in allowed[kind]:
        raise TemplateError(f"line {line}: ${name} cannot be used in a {context.value}")


def _context_at(source: str, offset: int, line: int) -> Context:
    """What kind of place `offset` is in, found by reading the template from its start as a
    browser's tokenizer does (comments, quoted values and raw-text elements skipped whole), so
    a `>` in a quoted value or a `<script` in a comment cannot mislead it."""
    pos = 0
    while True:
        lt = source.find("<", pos, offset)
        if lt == -1:
            return Context.TEXT
        if source.startswith("<!--", lt):
            end = source.find("-->", lt + 4)
            if end == -1 or end + 3 > offset:
                return Context.TEXT  # a comment: escaped text cannot close it
            pos = end + 3
            continue
        head = _TAG_HEAD.match(source, lt)
        if head is None:
            pos = lt + 1  # a lone `<`, or <!doctype>: text
            continue
        closing, element = head.group(1) == "/", head.group(2).lower()
        pos = _skip_tag(source, head.end(), offset, line)  # just after the tag's `>`
        if closing or element not in _RAW:
            continue
        end = source.lower().find(f"</{element}", pos)
        if end == -1 or end >= offset:
            return _RAW[element]
        pos = end


def _skip_tag(source: str, pos: int, offset: int, line: int) -> int:
    """Reads a tag's attributes from `pos`: the index after its `>`. A placeholder (`offset`)
    inside it must be in a quoted value: then the value's context is raised as _InValue."""
    while True:
        attr = _ATTR.match(source, pos)
        if attr is None or attr.end() == pos:
            gt = source.find(">", pos)
            if gt == -1 or offset < gt:
                raise TemplateError(
                    f"line {line}: a placeholder inside a tag must be in a quoted attribute value"
                )
            return gt + 1
        value = attr.group(2)
        if value and value[0] in "\"'" and attr.start(2) < offset < attr.end(2):
            raise _InValue(_value_context(attr.group(1).lower(), line))
        if attr.start() <= offset < attr.end():
            raise TemplateError(
                f"line {line}: a placeholder inside a tag must be in a quoted attribute value"
            )
        pos = attr.end()


def _value_context(name: str, line: int) -> Context:
    if name.startswith("on") or name in _CODE_ATTRS:
        raise TemplateError(f"line {line}: no placeholder may go into the attribute {name}")
    if name == "style":
        return Context.STYLE_ATTR
    # `content` as a URL: <meta http-equiv="refresh" content="0;url=...">.
    return Context.URL if name in _URL_ATTRS or name.endswith("href") else Context.ATTR


class _InValue(Exception):
    def __init__(self, context: Context) -> None:
        self.context = context


_TAG_HEAD = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)")
# One attribute (white space and `/` before it): name, then a quoted or unquoted value.
_ATTR = re.compile(rf"""[\s/]*({_NAME})(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
# Elements whose content is not markup: a placeholder there is script, style or text.
_RAW = {
    "script": Context.SCRIPT,
    "style": Context.STYLE,
    **{e: Context.TEXT for e in ("textarea", "title", "xmp", "iframe", "noembed", "noframes")},
}
