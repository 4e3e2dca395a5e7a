"""One node resolver: names, aliases from `nodes:`, and cluster:node; with guest_on_node."""

from __future__ import annotations

import textwrap

import pytest

from pxproxy.config.loader import ConfigError, parse_config
from pxproxy.inventory.model import Node
from pxproxy.inventory.node_aliases import node_aliases
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot

from ..builders import make_guest, make_node

CONFIG = """
proxmox:
  - {name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}
  - {name: lab, url: "https://pve.lab:8006", token_id: a@pve!t, secret: s}
nodes:
  pve1: {aliases: [HV1]}
  home:pve2: {aliases: [hv2, storage]}
  lab:pve2: {aliases: [hv2b]}
"""


def aliased(node: Node, aliases: dict[str, tuple[str, ...]]) -> Node:
    return node._replace(aliases=aliases.get(node.name, ()))


def snapshot() -> Snapshot:
    nodes = parse_config(CONFIG, env={}).nodes
    home, lab = node_aliases(nodes, "home"), node_aliases(nodes, "lab")
    return Snapshot(
        {
            "home": ClusterSnapshot.build(
                "home",
                [make_guest(301, "a", node="pve1"), make_guest(302, "b", node="pve2")],
                [aliased(make_node(n), home) for n in ("pve1", "pve2")],
            ),
            "lab": ClusterSnapshot.build(
                "lab",
                [make_guest(301, "c", cluster="lab", node="pve1")],
                [aliased(make_node(n, cluster="lab"), lab) for n in ("pve1", "pve2", "hv2")],
            ),
        }
    )


def test_config_keys_apply_to_their_cluster() -> None:
    nodes = parse_config(CONFIG, env={}).nodes
    assert node_aliases(nodes, "home") == {"pve1": ("hv1",), "pve2": ("hv2", "storage")}
    assert node_aliases(nodes, "lab") == {"pve1": ("hv1",), "pve2": ("hv2b",)}


@pytest.mark.parametrize(
    "bad",
    ["{'a/b': {aliases: [x]}}", "{'pve1': {aliases: ['a b']}}", "{'pve1': {aliases: ['x:y']}}"],
)
def test_bad_node_keys_and_aliases_are_config_errors(bad: str) -> None:
    text = CONFIG.split("nodes:")[0] + f"nodes: {bad}\n"
    with pytest.raises(ConfigError):
        parse_config(text, env={})


def refs(found: tuple[Node, ...]) -> list[str]:
    return [f"{n.cluster}:{n.name}" for n in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("home:pve1", ["home:pve1"]),
        ("lab:PVE1", ["lab:pve1"]),
        ("pve1", ["home:pve1", "lab:pve1"]),  # ambiguous: one per cluster
        ("hv1", ["home:pve1", "lab:pve1"]),  # a bare alias spans clusters too
        ("home:hv1", ["home:pve1"]),  # an alias within one cluster
        ("storage", ["home:pve2"]),
        ("hv2b", ["lab:pve2"]),
        # lab has a node really named hv2: names win over home's alias hv2.
        ("hv2", ["lab:hv2"]),
        ("home:hv2", ["home:pve2"]),
        ("nowhere:pve1", []),
        ("home:", []),
        ("pve9", []),
    ],
)
def test_node_resolution(text: str, expected: list[str]) -> None:
    assert refs(snapshot().node(text).nodes) == expected


def test_guest_on_node_through_every_node_form() -> None:
    snap = snapshot()
    assert [g.ref for g in snap.guest_on_node("home:pve1", "301").guests] == ["home:301"]
    assert [g.ref for g in snap.guest_on_node("lab:hv1", "301").guests] == ["lab:301"]
    # A bare name in two clusters, each with vmid 301 there: both, for the caller's 409.
    assert [g.ref for g in snap.guest_on_node("pve1", "301").guests] == ["home:301", "lab:301"]
    assert [g.ref for g in snap.guest_on_node("storage", "302").guests] == ["home:302"]
    assert snap.guest_on_node("home:pve2", "301").guests == ()  # 301 is not on that node
    assert snap.guest_on_node("home:pve1", "١٠١").guests == ()  # hostile digits: no match
    assert [g.ref for g in snap.guest_on_node("lxc", "302").guests] == ["home:302"]  # lxc/302


def test_node_aliases_in_host_and_alias_lookups() -> None:
    snap = snapshot()
    assert refs(snap.lookup_host("storage.example.com").nodes) == ["home:pve2"]
    assert refs(snap.lookup_alias("HV2B").nodes) == ["lab:pve2"]
    assert snap.lookup_alias("nothing").total == 0


def test_node_json_carries_its_aliases() -> None:
    node = snapshot().node("home:pve2").nodes[0]
    assert node.to_json()["aliases"] == ["hv2", "storage"]


def test_config_nodes_default_empty() -> None:
    text = textwrap.dedent(CONFIG.split("nodes:")[0])
    assert parse_config(text, env={}).nodes == {}
