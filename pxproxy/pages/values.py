"""Checks of what a route's page settings may hold: an accent colour and a logo URL.

They are validated where they are written (the config, a guest's notes) so that what reaches
a page is a colour and an image address, never CSS or a script; the templater escapes them
all the same.
"""

from __future__ import annotations

import re

MAX_LOGO_CHARS = 64 * 1024  # a small data: image; larger ones belong on a web server
MAX_TITLE_CHARS = 200

_HEX = r"#(?:[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})"
_FUNCTION = r"(?:rgb|rgba|hsl|hsla)\(\s*[0-9.%]+(?:deg)?(?:\s*[,\s/]\s*[0-9.%]+){2,3}\s*\)"
_COLOUR_RE = re.compile(rf"{_HEX}|{_FUNCTION}|[a-zA-Z]{{3,30}}")
_DATA_IMAGE_RE = re.compile(
    r"data:image/(?:png|jpeg|gif|webp|avif|svg\+xml);base64,[A-Za-z0-9+/=]+"
)
_URL_RE = re.compile(r"(?:https?://[^\s\"'<>`\\]+|/(?!/)[^\s\"'<>`\\]*)")


def check_accent(value: str) -> str:
    """A CSS colour: #rgb(a), #rrggbb(aa), rgb()/rgba()/hsl()/hsla() or a colour name."""
    text = value.strip()
    if not _COLOUR_RE.fullmatch(text):
        raise ValueError(
            f"{value[:60]!r} is not a CSS colour such as #e57000, rgb(229 112 0) or teal"
        )
    return text


def check_logo(value: str) -> str:
    """An http(s) URL, a path on the same host, or a base64 data:image/... URI."""
    text = value.strip()
    if len(text) > MAX_LOGO_CHARS:
        raise ValueError(f"a logo is at most {MAX_LOGO_CHARS} characters (this is {len(text)})")
    if not (_URL_RE.fullmatch(text) or _DATA_IMAGE_RE.fullmatch(text)):
        raise ValueError(
            "a logo is an http(s) URL, a /path, or a data:image/...;base64, URI "
            f"(not {text[:40]!r})"
        )
    return text


def check_title(value: str) -> str:
    text = value.strip()
    if not text or len(text) > MAX_TITLE_CHARS or any(ord(c) < 32 for c in text):
        raise ValueError(f"a title is 1 to {MAX_TITLE_CHARS} characters on one line")
    return text
