"""The `proxmox[].url` grammar: scheme, host and optional port, nothing else.

Each way of getting it wrong gets its own message: a missing scheme is the usual one."""

from __future__ import annotations

import re

_HOST_PORT_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.%\w]+\]|[^:/\[\]]+)(?::(?P<port>[^/]*))?$")
_DEFAULT_PORT = 8006
_MAX_SHOWN = 80


def _example(host_port: str) -> str:
    has_port = bool(re.search(r"(:\d+|\]:\d+)$", host_port)) and host_port.count(":") == 1
    return f"https://{host_port}" if has_port else f"https://{host_port}:{_DEFAULT_PORT}"


def check_cluster_url(value: str) -> str:
    """The URL without a trailing '/', or a ValueError saying what is wrong and how to write it."""
    shown = repr(value[:_MAX_SHOWN])
    if not value.strip():
        raise ValueError("is empty: write the address of a node, like https://pve.example.com:8006")
    if any(c.isspace() for c in value):
        raise ValueError(f"{shown} contains white space")
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise _no_scheme(value)
    if scheme.lower() not in ("https", "http"):
        raise ValueError(f"the scheme must be https:// (or http://), not {scheme[:20]}://")
    host_port, slash, path = rest.partition("/")
    if "@" in host_port:
        raise ValueError("must not hold credentials: use token_id/secret or username/password")
    if slash and path.strip("/"):
        raise ValueError(
            f"{shown} has a path (/{path[:40]}): give only the scheme, host and port, like "
            f"{scheme}://{host_port}"
        )
    match = _HOST_PORT_RE.match(host_port)
    if match is None or not match["host"].strip("[]"):
        raise ValueError(f"{shown} has no host: write it like https://pve.example.com:8006")
    port = match["port"]
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"{shown}: the port must be a number from 1 to 65535")
    return value.rstrip("/")


def _no_scheme(value: str) -> ValueError:
    host_port = value.split("/", 1)[0]
    return ValueError(
        f"{value[:_MAX_SHOWN]!r} has no scheme: write {_example(host_port)[:_MAX_SHOWN]}"
    )
