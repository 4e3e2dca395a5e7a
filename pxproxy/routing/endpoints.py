"""Where other proxies reach pxproxy's own listeners while a guest sleeps.

`integrations.proxy_address` when set; otherwise the proxy listener's bound address, with a
wildcard host (0.0.0.0, ::) replaced by the loopback address of its family. TCP and UDP
routes are reached at their own listen addresses, likewise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config.models import split_address

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1", "*": "127.0.0.1"}


def reachable(host: str) -> str:
    return _WILDCARDS.get(host, host)


@dataclass(frozen=True, slots=True)
class ProxyEndpoints:
    # (host, port) of the HTTP proxy listener; None when it is not listening.
    http: tuple[str, int] | None = None
    # TCP route listen address as configured ("0.0.0.0:25565") -> (host, port) bound.
    tcp: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # UDP route listen address as configured -> (host, port) bound.
    udp: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    # The proxy listener speaks TLS (`proxy.tls`): its URL is https.
    tls: bool = False

    def http_url(self) -> str | None:
        if self.http is None:
            return None
        host, port = self.http
        scheme = "https" if self.tls else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def endpoints_for(
    proxy_address: str | None,
    http_bound: tuple[str, int] | None,
    tcp_bound: Mapping[str, tuple[str, int]],
    udp_bound: Mapping[str, tuple[str, int]] | None = None,
    *,
    tls: bool = False,
) -> ProxyEndpoints:
    """The endpoints as other proxies should use them, from what the daemon bound."""
    http: tuple[str, int] | None = None
    if proxy_address is not None:
        host, port = split_address(proxy_address)
        http = (host, port)
    elif http_bound is not None:
        http = (reachable(http_bound[0]), http_bound[1])
    tcp = {listen: (reachable(h), p) for listen, (h, p) in tcp_bound.items()}
    udp = {listen: (reachable(h), p) for listen, (h, p) in (udp_bound or {}).items()}
    return ProxyEndpoints(http, tcp, udp, tls=tls)
