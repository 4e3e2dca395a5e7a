"""What pxproxy accepts as a host: `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2),
narrowed to what a route can name, and the one form a host is routed by.

Strict on purpose: two parsers that disagree about a host (this one, a guest's, a front
proxy's) let a request be routed by one name and served as another. So a Host that is not
plainly a DNS-style name, an IPv4 address or a bracketed IPv6 literal is refused, never
repaired. Choices where the RFCs allow more:
- `host:` (an empty port, allowed by RFC 3986) is refused: no client sends it;
- percent-encoding in a name (allowed in a reg-name) is refused: DNS names never need it;
- IPv6 zone ids and IPvFuture literals are refused; IPv6 is routed by its compressed form;
- surrounding spaces and tabs are dropped (optional whitespace around any field value, RFC
  9110 §5.5; llhttp leaves the trailing part in the value); any other whitespace is refused.

Pure: no I/O. The proxy (proxy/authority.py) and the route table (routing/hosts.py) share it,
so the management API's `?host=` decides exactly as the proxy does.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = [
    "MAX_LABEL_CHARS",
    "MAX_NAME_CHARS",
    "Authority",
    "BadAuthority",
    "ipv6_host",
    "parse_host",
    "reg_name",
]

MAX_NAME_CHARS = 253  # the longest DNS name, without its trailing dot
MAX_LABEL_CHARS = 63
_MAX_PORT = 65535
_MAX_PORT_DIGITS = 5
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
_OWS = " \t"

# The only texts a BadAuthority carries: fixed, so an answer or a log line never echoes what
# a client sent.
INVALID_HOST = "invalid host"
INVALID_PORT = "invalid port"
MISSING_HOST = "missing host"


class BadAuthority(ValueError):
    """A host or request target that is not acceptable; the message is safe to show a client."""

    def __init__(self, message: str = INVALID_HOST) -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Authority:
    """A host as it is routed: lowercase, no trailing dot, IPv6 without brackets."""

    host: str
    port: int | None = None

    @property
    def text(self) -> str:
        """`host[:port]` as it goes into a Host header (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


def reg_name(text: str) -> str | None:
    """ "Wiki.Example." -> "wiki.example"; None for anything but dot-separated labels of
    letters, digits, '-' and '_' (an IPv4 dotted quad is one of those)."""
    # isascii first: str.lower() maps some non-ASCII letters (KELVIN SIGN) to ASCII ones.
    if not text.isascii():
        return None
    name = text[:-1] if text.endswith(".") else text  # one trailing dot: the DNS root
    if not name or len(name) > MAX_NAME_CHARS:
        return None
    name = name.lower()
    for label in name.split("."):
        if not label or len(label) > MAX_LABEL_CHARS or not _LABEL_CHARS.issuperset(label):
            return None
    return name


def ipv6_host(text: str) -> str | None:
    """What is inside the brackets, "0:0::1" -> "::1"; None for anything but a plain IPv6
    address (a zone id, an IPvFuture literal, an IPv4 address, a name)."""
    if ":" not in text or not _IPV6_CHARS.issuperset(text):
        return None
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


# Hosts repeat request after request: the valid ones are remembered (bounded, so a scan of
# many names cannot grow it; refusals are not kept, their exception would be shared).
_PARSED: dict[str, Authority] = {}
_MAX_PARSED = 4096


def parse_host(value: str) -> Authority:
    """A Host field value (or the authority of an absolute-form target, without userinfo)."""
    found = _PARSED.get(value)
    if found is not None:
        return found
    parsed = _parse_host(value)
    if len(_PARSED) >= _MAX_PARSED:
        _PARSED.clear()
    _PARSED[value] = parsed
    return parsed


def _parse_host(value: str) -> Authority:
    text = value.strip(_OWS)
    if not text:
        raise BadAuthority(MISSING_HOST)
    # Visible ASCII only: no whitespace, no control characters, no bytes a name cannot have.
    if not all("!" <= ch <= "~" for ch in text) or "@" in text:
        raise BadAuthority(INVALID_HOST)
    if text.startswith("["):
        end = text.find("]")
        host = ipv6_host(text[1:end]) if end > 0 else None
        rest = text[end + 1 :] if end > 0 else ""
    else:
        if text.count(":") > 1:  # a bare IPv6 address: its port could not be told apart
            raise BadAuthority(INVALID_HOST)
        name, colon, port_text = text.partition(":")
        host = reg_name(name)
        rest = colon + port_text
    if host is None:
        raise BadAuthority(INVALID_HOST)
    return Authority(host, _port(rest))


def _port(rest: str) -> int | None:
    """What follows the host: "" or ":" and 1 to 5 digits up to 65535."""
    if not rest:
        return None
    digits = rest[1:]
    if (
        not rest.startswith(":")
        or not 0 < len(digits) <= _MAX_PORT_DIGITS
        or not digits.isascii()
        or not digits.isdigit()
        or int(digits) > _MAX_PORT
    ):
        raise BadAuthority(INVALID_PORT)
    return int(digits)
