"""One authority per request (RFC 9112 §3.2): the Host header and the request-target, parsed
strictly, so a request is routed and forwarded by the same name.

The host grammar itself lives in routing/host_syntax.py (the route table and the API's host
lookup use it too); this module adds the request-target forms. Pure: no I/O.

`parse_target` accepts:
- origin-form `/path?query` -> (None, target);
- absolute-form `http[s]://[userinfo@]host[:port][/path][?query]`, scheme in any case ->
  (the authority, userinfo dropped; the path and query, "/" when empty);
- asterisk-form `*` -> (None, "*"): only OPTIONS may use it, which the caller checks.
Everything else is refused: authority-form (CONNECT's), relative paths, other schemes, a
fragment, whitespace, control or non-ASCII characters.
"""

from __future__ import annotations

import re

from ..routing.host_syntax import Authority, BadAuthority, parse_host

__all__ = ["INVALID_TARGET", "Authority", "BadAuthority", "parse_host", "parse_target"]

INVALID_TARGET = "invalid request target"

_SCHEMES = ("http", "https")
# RFC 3986 userinfo: unreserved, pct-encoded ('%' checked apart), sub-delims and ':'.
_USERINFO_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:%"
)
_HEX = frozenset("0123456789abcdefABCDEF")
# Visible ASCII only, one or more: checked per request, so a compiled pattern, not a loop.
_VISIBLE = re.compile(r"[!-~]+").fullmatch


def parse_target(target: str) -> tuple[Authority | None, str]:
    """The request-target of a request line -> (its authority if absolute-form, the path and
    query to forward)."""
    if target == "*":
        return None, target
    # Visible ASCII only, and no fragment: a client never sends one (RFC 9112 §3.2).
    if _VISIBLE(target) is None or "#" in target:
        raise BadAuthority(INVALID_TARGET)
    if target.startswith("/"):
        return None, target
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise BadAuthority(INVALID_TARGET)
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at and not _valid_userinfo(userinfo):
        raise BadAuthority(INVALID_TARGET)
    if path.startswith("?") or not path:
        path = "/" + path
    return parse_host(host), path


def _valid_userinfo(text: str) -> bool:
    if not _USERINFO_CHARS.issuperset(text):
        return False  # an '@' among them too: the host would be ambiguous
    at = text.find("%")
    while at >= 0:
        if len(text) < at + 3 or not _HEX.issuperset(text[at + 1 : at + 3]):
            return False
        at = text.find("%", at + 3)
    return True
