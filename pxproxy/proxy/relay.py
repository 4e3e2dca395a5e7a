"""The hop from a proxy worker (proxy/worker.py) to the daemon, for what only the daemon may
decide: requests to routes whose guest is not ready (wakes, loading pages, held requests,
health checks of a sleeping guest, failures) and pxproxy's own /.pxproxy/ paths. Wakes stay
single that way, however many processes accept connections.

The worker sends the request as it understood it: the one Host it was routed by, the client's
fields minus hop-by-hop and framing, the body re-framed. It adds three fields: the secret the
daemon gave it over its pipe, the client's address and the scheme the client came by. The
daemon's relay listener (loopback, a port the kernel picks) believes them only with the
secret and drops them. It then serves the request as if the client had come straight to it:
forwarding headers, trusted proxies and health-check rules see the real client.
"""

from __future__ import annotations

import hmac
import ipaddress

from .headers import HOP_BY_HOP, connection_tokens
from .request import ClientRequest, Refusal, framing_tail

SECRET_FIELD = "X-Pxproxy-Relay"
PEER_FIELD = "X-Pxproxy-Peer"
SCHEME_FIELD = "X-Pxproxy-Scheme"
_OURS = "x-pxproxy-"  # no client may send these through a worker
# Framing is re-made; Expect is re-made too, for the daemon to answer (its 100 Continue
# passes through the worker) and for the guest to see, as without a worker.
_NOT_RELAYED = frozenset({"host", "content-length", "transfer-encoding", "expect"})
_SCHEMES = frozenset({"http", "https"})
# What a worker adds to a head the client's limits already admitted: its three fields and a
# re-made framing line, each at most this long (a scoped IPv6 peer is the longest).
RELAY_FIELDS = 4
RELAY_BYTES = 4 * 128


def relay_head(request: ClientRequest, *, scheme: str, secret: str) -> bytes:
    """The request head a worker sends the daemon's relay listener."""
    named = connection_tokens(request.fields)
    target = request.path
    lines = [f"{request.method} {target} HTTP/1.1\r\nHost: {request.host}\r\n"]
    for name, value in request.fields:
        lower = name.lower()
        if (
            lower in _NOT_RELAYED
            or lower in HOP_BY_HOP
            or lower in named
            or lower.startswith(("proxy-", _OURS))
        ):
            continue
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"{SECRET_FIELD}: {secret}\r\n")
    lines.append(f"{PEER_FIELD}: {request.peer or ''}\r\n")
    lines.append(f"{SCHEME_FIELD}: {scheme}\r\n")
    if request.expect_continue:
        lines.append("Expect: 100-continue\r\n")
    lines.append(framing_tail(request))
    return "".join(lines).encode("latin-1")


class RelayCheck:
    """The daemon's relay listener's side: only a worker's request, with its secret, is
    served; the client it speaks for becomes the request's peer and scheme."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def adopt(self, request: ClientRequest) -> None:
        """Take the relay fields off `request` and apply them, or Refusal (403)."""
        secret: list[str] = []
        peer: list[str] = []
        scheme: list[str] = []
        kept: list[tuple[str, str]] = []
        for name, value in request.fields:
            lower = name.lower()
            if not lower.startswith(_OURS):
                kept.append((name, value))
            elif lower == "x-pxproxy-relay":
                secret.append(value)
            elif lower == "x-pxproxy-peer":
                peer.append(value.strip())
            elif lower == "x-pxproxy-scheme":
                scheme.append(value.strip())
        if len(secret) != 1 or not hmac.compare_digest(secret[0].strip().encode(), self._secret):
            raise Refusal(403, "this listener serves pxproxy's workers only\n")
        if len(peer) != 1 or len(scheme) != 1 or scheme[0] not in _SCHEMES:
            raise Refusal(400, "invalid relay fields\n")
        if peer[0]:
            try:
                ipaddress.ip_address(peer[0].split("%", 1)[0])
            except ValueError:
                raise Refusal(400, "invalid relay fields\n") from None
        request.fields = kept
        request.peer = peer[0] or None
        request.scheme = scheme[0]
