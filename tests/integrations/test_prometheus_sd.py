from __future__ import annotations

import pytest

from pxproxy.integrations.filters import FilterError, parse_filters
from pxproxy.integrations.prometheus_sd import prometheus_sd

from ..builders import make_guest
from .support import route, route_set, snapshot

WIKI = make_guest(101, "wiki", ips=("10.0.0.5", "fd00::5"), tags=("web", "prod"), node="pve1")
DB = make_guest(102, "db", kind="qemu", status="stopped", node="pve2", ips=("10.0.0.6",))
V6 = make_guest(103, "v6only", ips=("fd00::7",))
BARE = make_guest(104, "bare")
TEMPLATE = make_guest(105, "tmpl", ips=("10.0.0.9",), template=True)
LAB = make_guest(101, "ci", cluster="lab", node="lab1", ips=("10.1.0.5",), tags=("web",))
SNAP = snapshot(WIKI, DB, V6, BARE, TEMPLATE, LAB)


def test_a_guest_group_has_its_addresses_and_pve_sd_labels() -> None:
    groups = prometheus_sd(SNAP, route_set())
    first = groups[0]
    assert first == {
        "targets": ["10.0.0.5", "[fd00::5]"],
        "labels": {
            "__meta_pve_vmid": "101",
            "__meta_pve_name": "wiki",
            "__meta_pve_type": "lxc",
            "__meta_pve_status": "running",
            "__meta_pve_node": "pve1",
            "__meta_pve_cluster": "home",
            "__meta_pve_tags": "web,prod",
            "__meta_pve_ipv4": "10.0.0.5",
            "__meta_pve_ipv6": "fd00::5",
        },
    }
    by_name = {g["labels"]["__meta_pve_name"]: g for g in groups}
    # No address, no targets, no group; templates are no targets either.
    assert sorted(by_name) == ["ci", "db", "v6only", "wiki"]
    assert "__meta_pve_tags" not in by_name["db"]["labels"]
    assert "__meta_pve_ipv6" not in by_name["db"]["labels"]
    assert "__meta_pve_ipv4" not in by_name["v6only"]["labels"]
    assert by_name["v6only"]["targets"] == ["[fd00::7]"]
    # Every label value is a string, as Prometheus wants.
    assert all(isinstance(v, str) for g in groups for v in g["labels"].values())
    # Ordered by cluster, then vmid.
    assert [
        (g["labels"]["__meta_pve_cluster"], g["labels"]["__meta_pve_vmid"]) for g in groups
    ] == [
        ("home", "101"),
        ("home", "102"),
        ("home", "103"),
        ("lab", "101"),
    ]


def test_each_route_port_of_a_guest_is_a_group_of_address_port_targets() -> None:
    routes = route_set(
        route(host="wiki.example.com", guest="home:101", port=8080),
        route(host=["docs.example.com", "kb.example.com"], guest="wiki", port=8080),
        route(listen="0.0.0.0:2222", guest="wiki", port=22),
        route(host="ci.example.com", guest="ci", port=80),
        route(host="gone.example.com", guest="nowhere", port=80),
    )
    groups = prometheus_sd(SNAP, routes)
    wiki = [g for g in groups if g["labels"]["__meta_pve_name"] == "wiki"]
    assert [g["targets"] for g in wiki] == [
        ["10.0.0.5", "[fd00::5]"],
        ["10.0.0.5:22", "[fd00::5]:22"],
        ["10.0.0.5:8080", "[fd00::5]:8080"],
    ]
    assert wiki[1]["labels"]["__meta_pve_port"] == "22"
    assert wiki[1]["labels"]["__meta_pve_routes"] == "tcp:0.0.0.0:2222"
    assert (
        wiki[2]["labels"]["__meta_pve_routes"] == "docs.example.com,kb.example.com;wiki.example.com"
    )
    assert wiki[2]["labels"]["__meta_pve_vmid"] == "101"
    ci = [g for g in groups if g["labels"]["__meta_pve_name"] == "ci"]
    assert [g["targets"] for g in ci] == [["10.1.0.5"], ["10.1.0.5:80"]]


def test_an_ambiguous_route_ref_adds_no_port_group() -> None:
    routes = route_set(route(host="x.example.com", guest="101", port=80))  # home:101 and lab:101
    groups = prometheus_sd(SNAP, routes)
    assert not [g for g in groups if "__meta_pve_port" in g["labels"]]


def _names(query: list[tuple[str, str]]) -> list[str]:
    groups = prometheus_sd(SNAP, route_set(), parse_filters(query))
    return sorted({g["labels"]["__meta_pve_name"] for g in groups})


def test_filters_one_parameter_any_value_several_parameters_all() -> None:
    assert _names([("type", "qemu")]) == ["db"]
    assert _names([("type", "qemu"), ("type", "lxc")]) == ["ci", "db", "v6only", "wiki"]
    assert _names([("status", "running")]) == ["ci", "v6only", "wiki"]
    assert _names([("tag", "web")]) == ["ci", "wiki"]
    assert _names([("tag", "prod"), ("tag", "nope")]) == ["wiki"]
    assert _names([("tag", "web"), ("type", "lxc"), ("status", "stopped")]) == []
    assert _names([]) == ["ci", "db", "v6only", "wiki"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ([("type", "vm")], "type"),
        ([("type", "")], "type"),
        ([("status", "Running!")], "status"),
        ([("status", "")], "status"),
        ([("tag", "a b")], "tag"),
        ([("tag", "x" * 200)], "tag"),
        ([("tag", "")], "tag"),
        ([("node", "pve1")], "node"),
    ],
)
def test_bad_filters_name_the_parameter(query: list[tuple[str, str]], parameter: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse_filters(query)
    assert caught.value.parameter == parameter
    assert parameter in caught.value.message
