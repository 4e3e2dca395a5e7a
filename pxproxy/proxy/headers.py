"""Request and response header rewriting: hop-by-hop removal and X-Forwarded-* / Forwarded."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 §7.6.1 plus the de-facto ones; every Proxy-* header is dropped as well.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# aiohttp's WebSocket client makes its own handshake; the subprotocol is passed separately.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# What a client could forge to pose as someone else; believed only from trusted proxies.
FORWARDING = frozenset(
    {
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
    }
)
_MAX_TRUST_CACHE = 4096


class TrustedProxies:
    """Is a peer one of `proxy.trusted_proxies`? Memoised: peers repeat, networks do not change."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._seen: dict[str, bool] = {}

    def __contains__(self, peer: object) -> bool:
        if not self._networks or not isinstance(peer, str):
            return False
        known = self._seen.get(peer)
        if known is None:
            known = _in_networks(peer, self._networks)
            if len(self._seen) >= _MAX_TRUST_CACHE:
                self._seen.clear()  # bounded: a scan from many addresses cannot grow it
            self._seen[peer] = known
        return known


def _in_networks(
    peer: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in networks)


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_hop(name: str, named: set[str]) -> bool:
    lower = name.lower()
    return lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in named


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _forwarded_node(peer: str) -> str:
    # RFC 7239 §6: IPv6 in brackets, and then quoted because of the colons.
    return _quote(f"[{peer}]") if ":" in peer else peer


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    peer: str | None,
    proto: str,
    trusted: bool,
    websocket: bool = False,
) -> CIMultiDict[str]:
    """The headers to send to the guest: Host kept, hop-by-hop gone, forwarding added."""
    named = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if _is_hop(lower, named):
            continue
        if websocket and lower in WEBSOCKET_HANDSHAKE:
            continue
        if not trusted and lower in FORWARDING:
            continue
        out.add(name, value)
    host = incoming.get("Host")
    client = peer or "unknown"
    # Several X-Forwarded-For or Forwarded lines from a trusted chain are one list (RFC 9110).
    prior_for = ", ".join(out.popall("X-Forwarded-For", ()))
    out["X-Forwarded-For"] = f"{prior_for}, {client}" if prior_for else client
    # A trusted outer proxy saw the original scheme and host; keep its word for them.
    out.setdefault("X-Forwarded-Proto", proto)
    if host is not None:
        out.setdefault("X-Forwarded-Host", host)
    if not trusted:
        out["X-Real-IP"] = client
    element = f"for={_forwarded_node(client) if peer else 'unknown'}"
    if host is not None:
        element += f";host={_quote(host)}"
    element += f";proto={proto}"
    prior = ", ".join(out.popall("Forwarded", ()))
    out["Forwarded"] = f"{prior}, {element}" if prior else element
    return out


def client_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The guest's response headers minus hop-by-hop ones; repeated ones (Set-Cookie) kept."""
    named = _connection_tokens(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if not _is_hop(name, named):
            out.add(name, value)
    return out
