"""A log formatter that blanks credentials wherever they appear in the formatted text, message
and traceback alike. Defence in depth: the listeners never log header values, but a traceback
of a library (aiohttp quotes request lines) or a careless message must not carry a secret."""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# A header name, the separator it has in `Name: value`, `'Name': 'value'`, `('Name', 'value')`
# or `name=value`, then the value. A value the separator opened a quote for ends at a quote;
# a bare one (`Cookie: sid="x"; a=1`, quotes are valid in cookies) only at a line end, or an
# escaped \r or \n in a repr.
_HEADER_VALUE = re.compile(
    r"(?i)\b(?P<name>proxy-authorization|authorization|set-cookie|cookie|x-api-key)"
    r"(?P<sep>['\"]?\s*[:=,]\s*(?:b?(?P<quote>['\"]))?)"
    r"(?P<value>(?(quote)(?:[^'\"\r\n\\]|\\(?![rn]).)+|(?:[^\r\n\\]|\\(?![rn]).)+))"
)
# Credentials without their header name: aiohttp's "line too long" error quotes only the value.
_SCHEME_VALUE = re.compile(r"(?i)\b(?P<scheme>bearer|basic)(?P<sep>\s+)[A-Za-z0-9._~+/=:-]+")


def redact(text: str) -> str:
    text = _HEADER_VALUE.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
    return _SCHEME_VALUE.sub(lambda m: f"{m['scheme']}{m['sep']}{REDACTED}", text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def install(fmt: str, logger: logging.Logger | None = None) -> None:
    """Give every handler of `logger` (default: the root logger) a redacting formatter."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(RedactingFormatter(fmt))
