"""Static guest addresses from PVE guest configs (LXC ``netN``, cloud-init ``ipconfigN``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface

IPAddress = IPv4Address | IPv6Address

# PVE allows net0..net31 and ipconfig0..ipconfig31.
MAX_NET_INDEX = 31
# Longest textual IPv6 (with embedded IPv4) plus zone and prefix fits well below this; the cap
# keeps hostile strings away from the ipaddress parser.
_MAX_ADDRESS_LEN = 100
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
# Placeholder values meaning "no static address" in ip= / ip6=.
_NON_STATIC = frozenset({"dhcp", "manual", "auto"})


def parse_property_string(text: str) -> dict[str, str]:
    """Split a PVE property string into key/value pairs, skipping malformed items.

    A bare item before any key=value item is PVE's "default key" and is stored under "".
    On duplicate keys the first one wins.
    """
    result: dict[str, str] = {}
    if not isinstance(text, str):
        return result
    seen_item = False
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        first = not seen_item
        seen_item = True
        key, sep, value = item.partition("=")
        if not sep:
            if first:
                result[""] = item
            continue
        key = key.strip()
        value = value.strip()
        if not value or not _KEY_RE.fullmatch(key) or key in result:
            continue
        result[key] = value
    return result


def parse_address(text: object) -> IPAddress | None:
    """Parse a bare address or CIDR into its address, dropping any IPv6 zone; None if invalid."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > _MAX_ADDRESS_LEN:
        return None
    addr, sep, prefix = text.partition("/")
    if ":" in addr:
        # A zone (fe80::1%eth0) is only meaningful on the guest itself.
        addr = addr.partition("%")[0]
    try:
        if sep:
            return ip_interface(f"{addr}/{prefix}").ip
        return ip_address(addr)
    except ValueError:
        return None


def _static_address(value: str | None, version: int) -> IPAddress | None:
    if value is None or value.strip().lower() in _NON_STATIC:
        return None
    addr = parse_address(value)
    # ip= must hold IPv4 and ip6= IPv6; anything else is a broken config.
    if addr is None or addr.version != version:
        return None
    return addr


def _static_ips(config: Mapping[str, object], key_prefix: str) -> list[IPAddress]:
    found: dict[IPAddress, None] = {}
    if not isinstance(config, Mapping):
        return []
    for index in range(MAX_NET_INDEX + 1):
        raw = config.get(f"{key_prefix}{index}")
        if not isinstance(raw, str):
            continue
        props = parse_property_string(raw)
        for key, version in (("ip", 4), ("ip6", 6)):
            addr = _static_address(props.get(key), version)
            if addr is not None:
                found.setdefault(addr, None)
    return list(found)


def static_ips_from_lxc_config(config: Mapping[str, object]) -> list[IPAddress]:
    """Concrete addresses from ``net0..net31`` of an LXC config, in net order, v4 before v6."""
    return _static_ips(config, "net")


def static_ips_from_qemu_config(config: Mapping[str, object]) -> list[IPAddress]:
    """Concrete addresses from cloud-init ``ipconfig0..ipconfig31`` of a QEMU config."""
    return _static_ips(config, "ipconfig")
