"""`host:port` and `[v6]:port` addresses in the config: one parser for every key that holds
one (the listeners in models.py, `dns.listen` and `integrations.proxy_address`)."""

from __future__ import annotations


def split_address(value: str) -> tuple[str, int]:
    """Host and port of "host:port" / "[v6]:port"; an empty host is every IPv4 address."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not an address like 127.0.0.1:8081 or [::1]:8081")
    return host or "0.0.0.0", int(port)


def check_address(value: str) -> str:
    split_address(value)
    return value
