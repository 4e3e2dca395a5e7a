"""The `nodes:` section's keys and aliases: `pve1` or `cluster:pve1`, aliases like node names.

A node name goes into Proxmox API paths and into refs (`pve1/101`, `home:pve1`), so keys and
aliases are hostname labels (dots allowed): never a ':', '/' or space.
"""

from __future__ import annotations

import re

_LABEL = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
_LABEL_RE = re.compile(_LABEL)
_KEY_RE = re.compile(rf"(?:(?P<cluster>[^:/\s]+):)?(?P<node>{_LABEL})")


def check_node_key(value: str) -> str:
    """`pve1` (that node in any cluster) or `home:pve1` (only in cluster home)."""
    if not _KEY_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a node name or cluster:node")
    return value


def check_node_alias(value: str) -> str:
    if not _LABEL_RE.fullmatch(value):
        raise ValueError(
            f"node alias {value!r} must be a host name label (letters, digits, '.', '_', '-')"
        )
    return value.lower()


def split_node_key(key: str) -> tuple[str | None, str]:
    """`home:pve1` -> ("home", "pve1"); `pve1` -> (None, "pve1")."""
    cluster, sep, node = key.rpartition(":")
    return (cluster, node) if sep else (None, key)
