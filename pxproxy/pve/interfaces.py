"""Runtime guest addresses from the LXC interfaces API and the QEMU guest agent."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address

from pxproxy.pve.net_config import IPAddress, parse_address

# Legacy inet/inet6 hold one CIDR, but tolerate lists in case a version joins several.
_LIST_SEP_RE = re.compile(r"[\s,]+")


def _addresses_from_entries(entries: object, out: dict[IPAddress, None]) -> None:
    """Collect ``ip-address`` values from an ``ip-addresses`` list (LXC and agent share it)."""
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        addr = parse_address(entry.get("ip-address"))
        if addr is not None:
            out.setdefault(addr, None)


def _addresses_from_legacy(value: object, out: dict[IPAddress, None]) -> None:
    if not isinstance(value, str):
        return
    for token in _LIST_SEP_RE.split(value):
        addr = parse_address(token)
        if addr is not None:
            out.setdefault(addr, None)


def addresses_from_lxc_interfaces(data: object) -> list[IPAddress]:
    """All addresses in a ``/lxc/{vmid}/interfaces`` answer (``None`` for a stopped guest)."""
    found: dict[IPAddress, None] = {}
    if not isinstance(data, list):
        return []
    for iface in data:
        if not isinstance(iface, dict):
            continue
        entries = iface.get("ip-addresses")
        # PVE >= 8.4: the legacy fields only keep the last address per family. A present but
        # non-list value is treated as absent so a garbled field does not hide the legacy ones.
        if isinstance(entries, list):
            _addresses_from_entries(entries, found)
            continue
        _addresses_from_legacy(iface.get("inet"), found)
        _addresses_from_legacy(iface.get("inet6"), found)
    return list(found)


def addresses_from_agent_interfaces(data: object) -> list[IPAddress]:
    """All addresses in a guest agent ``network-get-interfaces`` answer (``{"result": [...]}``)."""
    found: dict[IPAddress, None] = {}
    interfaces = data.get("result") if isinstance(data, dict) else data
    if not isinstance(interfaces, list):
        return []
    for iface in interfaces:
        if isinstance(iface, dict):
            _addresses_from_entries(iface.get("ip-addresses"), found)
    return list(found)


def is_usable_address(addr: IPv4Address | IPv6Address) -> bool:
    """Whether a guest address can be reached from outside the guest."""
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        # Python 3.11 does not look through ::ffff:a.b.c.d for these checks.
        addr = addr.ipv4_mapped
    return not (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast)
