"""The json format's signature: HMAC-SHA256 over `<timestamp>.<body>`.

The timestamp (unix seconds, also sent as X-Pxproxy-Timestamp) is inside the signed string so
a receiver that rejects old timestamps cannot be fed a recorded delivery again."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Pxproxy-Signature"
TIMESTAMP_HEADER = "X-Pxproxy-Timestamp"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The header's value: `sha256=<hex>`."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver does (the tests use it; the README shows the same in a few lines)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), header)
