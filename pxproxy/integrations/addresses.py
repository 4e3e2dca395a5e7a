"""Which of a guest's addresses the integrations hand out."""

from __future__ import annotations

import ipaddress

from ..inventory.model import Guest


def first_of_family(guest: Guest, version: int) -> str | None:
    for text in guest.ips:
        try:
            if ipaddress.ip_address(text).version == version:
                return text
        except ValueError:
            continue
    return None


def first_address(guest: Guest) -> str | None:
    """The first IPv4 address, else the first IPv6 one: what a proxy or Ansible connects to."""
    return first_of_family(guest, 4) or first_of_family(guest, 6)


def url_host(ip: str) -> str:
    """An address as the host part of a URL or target: IPv6 bracketed."""
    return f"[{ip}]" if ":" in ip else ip
