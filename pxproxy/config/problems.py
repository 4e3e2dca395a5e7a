"""One problem found in a config: where (its key path) and what, in words for people."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple

Loc = tuple[int | str, ...]


def key_path(loc: Loc) -> str:
    """("proxmox", 0, "tls", "fingerprint") -> "proxmox[0].tls.fingerprint"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


class Problem(NamedTuple):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


_PART_RE = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
_ABSENT = 1 << 30  # a key not in the file (a default): after the keys that are


def document_order(data: object, path: str) -> tuple[int, ...]:
    """Where a key path is in the file, as a sort key: problems then read top to bottom."""
    order: list[int] = []
    node = data
    for index, name in _PART_RE.findall(path):
        if index and isinstance(node, list) and int(index) < len(node):
            order.append(int(index))
            node = node[int(index)]
        elif name and isinstance(node, Mapping) and name in node:
            order.append(list(node).index(name))
            node = node[name]
        else:
            order.append(_ABSENT)
            break
    return tuple(order)
