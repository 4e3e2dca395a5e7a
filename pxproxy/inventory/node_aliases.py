"""Which aliases the config's `nodes:` section gives the nodes of one cluster."""

from __future__ import annotations

from collections.abc import Mapping

from ..config.models import NodeExtras
from ..config.node_names import split_node_key


def node_aliases(nodes: Mapping[str, NodeExtras], cluster: str) -> dict[str, tuple[str, ...]]:
    """Node name (lowercased) -> its aliases in `cluster`: a `pve1` key applies in every
    cluster, a `home:pve1` key only in cluster home; both together add up."""
    out: dict[str, tuple[str, ...]] = {}
    for key, extras in nodes.items():
        scope, name = split_node_key(key)
        if scope is not None and scope != cluster:
            continue
        name = name.lower()
        out[name] = tuple(dict.fromkeys((*out.get(name, ()), *extras.aliases)))
    return out
