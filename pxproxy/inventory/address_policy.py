"""Which resolved guest addresses pxproxy keeps (config `ips:`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..config.models import IpPolicy
from ..pve.interfaces import is_usable_address

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LO = ipaddress.IPv4Address("127.0.0.1")


class AddressPolicy:
    """Default: every family and range except loopback, link-local, unspecified, multicast.
    Unlike a private-only filter, public addresses are never dropped silently."""

    def __init__(self, policy: IpPolicy | None = None) -> None:
        policy = policy or IpPolicy()
        self._loopback = policy.loopback
        self._v4 = "ipv4" in policy.families
        self._v6 = "ipv6" in policy.families
        self._include: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in policy.include
        )
        self._exclude: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in policy.exclude
        )

    def keeps(self, addr: Address) -> bool:
        if not is_usable_address(addr) and not (
            self._loopback and addr.version == 4 and addr.is_loopback and addr != _LO
        ):
            return False
        if not (self._v4 if addr.version == 4 else self._v6):
            return False
        if self._include and not any(addr in n for n in self._include if n.version == addr.version):
            return False
        return not any(addr in n for n in self._exclude if n.version == addr.version)

    def select(self, addrs: Iterable[Address]) -> tuple[str, ...]:
        """Kept addresses as canonical strings, order preserved, duplicates removed."""
        return tuple(dict.fromkeys(a.compressed for a in addrs if self.keeps(a)))
