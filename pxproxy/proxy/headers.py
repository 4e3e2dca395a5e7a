"""Request and response header rewriting: hop-by-hop removal and X-Forwarded-* / Forwarded."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

# RFC 9110 §7.6.1 plus the de-facto ones; every Proxy-* header is dropped as well.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# Framing and the routed-by Host are the proxy's to write, never the peer's to pass on.
_DROPPED = frozenset({"host", "content-length", "transfer-encoding"})
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


Fields = list[tuple[str, str]]  # header lines in order, names as sent


def connection_tokens(fields: Fields) -> set[str]:
    tokens: set[str] = set()
    for name, value in fields:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_hop(lower: str, named: set[str]) -> bool:
    return lower in HOP_BY_HOP or lower.startswith("proxy-") or lower in named


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _forwarded_node(peer: str) -> str:
    # RFC 7239 §6: IPv6 in brackets, and then quoted because of the colons.
    return _quote(f"[{peer}]") if ":" in peer else peer


def upstream_request_headers(
    incoming: Fields,
    *,
    host: str,
    peer: str | None,
    proto: str,
    trusted: bool,
) -> Fields:
    """The headers to send to the guest: the one Host the request was routed by, hop-by-hop
    and framing gone (the proxy frames the body itself), forwarding added."""
    named = connection_tokens(incoming)
    out: Fields = [("Host", host)]
    prior_for: list[str] = []
    prior: list[str] = []
    has_proto = has_host = False
    for name, value in incoming:
        lower = name.lower()
        if lower in _DROPPED or _is_hop(lower, named):
            continue
        if lower in FORWARDING:
            if not trusted:
                continue
            # Several X-Forwarded-For or Forwarded lines from a trusted chain are one list.
            if lower == "x-forwarded-for":
                prior_for.append(value)
                continue
            if lower == "forwarded":
                prior.append(value)
                continue
            has_proto = has_proto or lower == "x-forwarded-proto"
            has_host = has_host or lower == "x-forwarded-host"
        out.append((name, value))
    client = peer or "unknown"
    joined_for = ", ".join(prior_for)
    out.append(("X-Forwarded-For", f"{joined_for}, {client}" if joined_for else client))
    # A trusted outer proxy saw the original scheme and host; keep its word for them.
    if not has_proto:
        out.append(("X-Forwarded-Proto", proto))
    if not has_host:
        out.append(("X-Forwarded-Host", host))
    if not trusted:
        out.append(("X-Real-IP", client))
    element = f"for={_forwarded_node(client) if peer else 'unknown'};host={_quote(host)}"
    element += f";proto={proto}"
    joined = ", ".join(prior)
    out.append(("Forwarded", f"{joined}, {element}" if joined else element))
    return out


def client_response_headers(upstream: Fields) -> Fields:
    """The guest's response headers minus hop-by-hop and framing ones (the proxy frames the
    body itself); repeated ones (Set-Cookie) kept."""
    named = connection_tokens(upstream)
    return [
        (name, value)
        for name, value in upstream
        if (lower := name.lower()) not in _DROPPED and not _is_hop(lower, named)
    ]
