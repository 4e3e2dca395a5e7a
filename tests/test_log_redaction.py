"""The redacting formatter: credentials are blanked in messages and tracebacks alike."""

from __future__ import annotations

import logging

import pytest

from pxproxy.log_redaction import REDACTED, RedactingFormatter, redact

SECRET = "tok-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    "text",
    [
        f"Authorization: Bearer {SECRET}",
        f"authorization: Basic {SECRET}",
        f"b'Authorization: Bearer {SECRET}\\r'",
        f"b'Proxy-Authorization: Basic {SECRET}\\x01'",
        f"{{'Cookie': 'session={SECRET}; theme=dark'}}",
        f"<CIMultiDict('Set-Cookie': 'id={SECRET}; Path=/')>",
        f"('X-Api-Key', '{SECRET}')",
        f"x-api-key={SECRET}",
        f"Got more than 8190 bytes when reading: b'Bearer {SECRET}AAAA...'",
    ],
)
def test_credentials_are_redacted(text: str) -> None:
    out = redact(text)
    assert SECRET not in out
    assert REDACTED in out


def test_other_text_is_left_alone() -> None:
    text = "GET /api/v1/guests 200 from 10.0.0.5:4242 (Host: wiki.example.com)"
    assert redact(text) == text


def test_the_formatter_redacts_message_and_traceback() -> None:
    formatter = RedactingFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError(f"Invalid header value char: b'Authorization: Bearer {SECRET}\\x01'")
    except ValueError:
        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "request had Cookie: %s",
            (f"sid={SECRET}",),
            exc_info=__import__("sys").exc_info(),
        )
    out = formatter.format(record)
    assert "Traceback (most recent call last)" in out
    assert "ValueError: Invalid header value char" in out
    assert SECRET not in out
    # The message, the exception's line, and the traceback's quote of the raising source line.
    assert out.count(REDACTED) == 3
    assert "Authorization: [redacted]" in out


@pytest.mark.parametrize(
    "text",
    [
        'Cookie: sid="S3CRET"; a=1',
        'Set-Cookie: tok="S3CRET"; Path=/',
        '{"Cookie": "a=\\"S3CRET\\""}',
        "{'X-Api-Key': 'k\\'S3CRET', 'Host': 'h'}",
    ],
)
def test_quoted_and_escaped_values_are_redacted_whole(text: str) -> None:
    assert "S3CRET" not in redact(text)
