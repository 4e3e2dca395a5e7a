from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.inventory.ingest import (
    NodeEntry,
    make_nodes,
    parse_resources,
    split_tags,
    tag_aliases,
)
from pxproxy.inventory.model import Guest

# /cluster/resources, PVE 8, recorded on real clusters (pve-reference.md).
PVE8_QEMU = (
    '{"netout":545248946,"type":"qemu","name":"server1","maxcpu":1,"mem":842551296,'
    '"netin":2456116121,"maxmem":1073741824,"disk":0,"node":"node2","cpu":0.0249060195469461,'
    '"maxdisk":34359738368,"vmid":100,"diskwrite":6059209728,"diskread":4510777856,'
    '"status":"running","template":0,"id":"qemu/100","uptime":874350}'
)
PVE8_LXC = (
    '{"maxmem":12884901888,"type":"lxc","cpu":0.0544631947461575,"netin":65412250538,'
    '"template":0,"diskread":324033204224,"maxcpu":8,"disk":29767077888,'
    '"diskwrite":707866570752,"node":"pve","vmid":100,"mem":5389254656,"status":"running",'
    '"netout":66898114418,"uptime":1204757,"id":"lxc/100","maxdisk":134145380352,'
    '"name":"Jellyfin"}'
)


def body(*items: object) -> str:
    return json.dumps({"data": list(items)})


def only_guest(text: str | bytes, cluster: str = "home") -> Guest:
    result = parse_resources(text, cluster)
    assert len(result.guests) == 1
    return result.guests[0]


def test_pve8_qemu_sample() -> None:
    g = only_guest('{"data":[' + PVE8_QEMU + "]}")
    assert g.cluster == "home"
    assert g.id == "qemu/100"
    assert g.type == "qemu"
    assert g.node == "node2"
    assert g.vmid == 100
    assert g.name == "server1"
    assert g.status == "running"
    assert g.template is False
    assert g.uptime == 874350
    assert g.cpu == pytest.approx(0.0249060195469461)
    assert g.maxcpu == 1.0
    assert (g.mem, g.maxmem) == (842551296, 1073741824)
    assert (g.disk, g.maxdisk) == (0, 34359738368)
    assert (g.netin, g.netout) == (2456116121, 545248946)
    assert (g.diskread, g.diskwrite) == (4510777856, 6059209728)
    assert g.ips == ()
    assert g.ip_source is None
    assert g.tags == ()
    assert g.aliases == ()
    assert (g.lock, g.pool, g.hastate) == (None, None, None)
    assert g.ref == "home:100"


def test_pve8_lxc_sample() -> None:
    g = only_guest(('{"data":[' + PVE8_LXC + "]}").encode(), cluster="lab")
    assert g.id == "lxc/100"
    assert g.type == "lxc"
    assert g.node == "pve"
    assert g.name == "Jellyfin"
    assert g.maxcpu == 8.0
    assert g.mem == 5389254656
    assert g.netin == 65412250538
    assert g.uptime == 1204757
    assert g.to_json()["id"] == "lxc/100"
    assert g.to_json()["cluster"] == "lab"


def test_both_samples_together_keep_order() -> None:
    result = parse_resources('{"data":[' + PVE8_QEMU + "," + PVE8_LXC + "]}", "home")
    assert [g.id for g in result.guests] == ["qemu/100", "lxc/100"]
    assert result.nodes == []


def test_pve7_numbers_as_strings() -> None:
    g = only_guest(
        body(
            {
                "id": "lxc/101",
                "type": "lxc",
                "vmid": "101",
                "node": "pve",
                "status": "running",
                "name": "wiki",
                "template": "0",
                "maxcpu": "2",
                "cpu": "0.25",
                "mem": "1048576",
                "maxmem": "2097152",
                "uptime": "3600",
                "netin": "12.0",
            }
        )
    )
    assert g.vmid == 101
    assert g.id == "lxc/101"
    assert g.maxcpu == 2.0
    assert g.cpu == 0.25
    assert (g.mem, g.maxmem) == (1048576, 2097152)
    assert g.uptime == 3600
    assert g.netin == 12
    assert g.template is False


@pytest.mark.parametrize("flag", [1, "1", True])
def test_template_flag(flag: object) -> None:
    g = only_guest(body({"type": "qemu", "vmid": 9000, "node": "pve", "template": flag}))
    assert g.template is True


def test_node_entries() -> None:
    result = parse_resources(
        body(
            {
                "id": "node/pve2",
                "type": "node",
                "node": "pve2",
                "status": "offline",
            },
            {
                "id": "node/pve1",
                "type": "node",
                "node": "pve1",
                "status": "online",
                "cpu": 0.05,
                "maxcpu": 16,
                "mem": "1024",
                "maxmem": 4096,
                "uptime": 100,
            },
            {"type": "node", "status": "online"},  # no name: skipped
            {"type": "node", "node": "", "status": "online"},
        ),
        "home",
    )
    assert result.guests == []
    assert result.nodes == [
        NodeEntry("pve2", "offline", 0.0, 0.0, 0, 0, 0),
        NodeEntry("pve1", "online", 0.05, 16.0, 1024, 4096, 100),
    ]
    nodes = make_nodes("home", result.nodes, {"pve1": "10.0.0.1"})
    assert [(n.name, n.status, n.ip, n.cluster) for n in nodes] == [
        ("pve1", "online", "10.0.0.1", "home"),
        ("pve2", "offline", None, "home"),
    ]


def test_node_without_status_is_unknown() -> None:
    result = parse_resources(body({"type": "node", "node": "pve"}), "home")
    assert result.nodes[0].status == "unknown"


@pytest.mark.parametrize(
    ("raw", "tags"),
    [
        ("web;prod", ("web", "prod")),
        ("web,prod", ("web", "prod")),
        ("web prod", ("web", "prod")),
        ("web;;prod;", ("web", "prod")),
        ("", ()),
        (None, ()),
        (5, ()),
    ],
)
def test_split_tags(raw: object, tags: tuple[str, ...]) -> None:
    assert split_tags(raw) == tags


def test_tags_and_alias_tags() -> None:
    g = only_guest(
        body(
            {
                "type": "lxc",
                "vmid": 101,
                "node": "pve",
                "status": "running",
                "tags": "web;alias.Docs;alias.kb;alias.;aliasx",
            }
        )
    )
    assert g.tags == ("web", "alias.Docs", "alias.kb", "alias.", "aliasx")
    assert g.aliases == ("docs", "kb")


def test_tag_aliases_helper() -> None:
    assert tag_aliases(("alias.Wiki", "alias.", "other")) == ("wiki",)


def test_lock_pool_hastate() -> None:
    g = only_guest(
        body(
            {
                "type": "qemu",
                "vmid": 100,
                "node": "pve",
                "status": "stopped",
                "lock": "suspended",
                "pool": "",
                "hastate": "started",
            }
        )
    )
    assert g.lock == "suspended"
    assert g.pool is None  # empty string means none
    assert g.hastate == "started"


def test_offline_node_guest_has_only_the_always_fields() -> None:
    g = only_guest(
        body({"id": "qemu/105", "vmid": 105, "node": "pve3", "type": "qemu", "status": "unknown"})
    )
    assert g.id == "qemu/105"
    assert g.status == "unknown"
    assert g.name == ""
    assert g.uptime == 0
    assert g.template is False
    assert (g.cpu, g.maxcpu, g.mem, g.maxmem) == (0.0, 0.0, 0, 0)
    assert g.tags == ()


@pytest.mark.parametrize(
    "entry",
    [
        "a string",
        42,
        None,
        ["list"],
        {"type": "lxc", "node": "pve"},  # no vmid
        {"type": "lxc", "vmid": 0, "node": "pve"},
        {"type": "lxc", "vmid": -5, "node": "pve"},
        {"type": "lxc", "vmid": "abc", "node": "pve"},
        {"type": "lxc", "vmid": 101},  # no node
        {"type": "lxc", "vmid": 101, "node": ""},
        {"type": "lxc", "vmid": 101, "node": 7},
        {"type": "storage", "storage": "local", "node": "pve"},
        {"type": "pool", "pool": "p"},
        {"type": "sdn", "sdn": "zone", "node": "pve"},
        {"vmid": 101, "node": "pve"},  # no type
    ],
)
def test_malformed_and_unknown_entries_are_skipped(entry: object) -> None:
    good = {"type": "lxc", "vmid": 200, "node": "pve", "status": "running"}
    result = parse_resources(body(entry, good), "home")
    assert [g.id for g in result.guests] == ["lxc/200"]
    assert result.nodes == []


def test_garbled_numbers_default_to_zero() -> None:
    g = only_guest(
        body({"type": "qemu", "vmid": 100, "node": "pve", "cpu": "lots", "mem": {}, "uptime": []})
    )
    assert (g.cpu, g.mem, g.uptime) == (0.0, 0, 0)


@pytest.mark.parametrize("value", ["1e999", "-inf", "inf", "nan", "1" * 5000])
def test_out_of_range_numeric_strings_default_to_zero(value: str) -> None:
    g = only_guest(body({"type": "lxc", "vmid": 101, "node": "pve", "uptime": value, "mem": value}))
    assert (g.uptime, g.mem) == (0, 0)


@pytest.mark.parametrize("vmid", ["1e999", "-inf", "1" * 5000])
def test_out_of_range_vmid_skips_the_entry(vmid: str) -> None:
    assert parse_resources(body({"type": "lxc", "vmid": vmid, "node": "pve"}), "c").guests == []


@pytest.mark.parametrize(
    "text", ['{"data": null}', '{"data": {}}', "[]", '{"errors": {}}', '"data"']
)
def test_answer_without_data_list(text: str) -> None:
    with pytest.raises(ValueError, match="no data list"):
        parse_resources(text, "home")


def test_not_json() -> None:
    # json.JSONDecodeError is a ValueError, which the poller reports as a failed cycle.
    with pytest.raises(json.JSONDecodeError):
        parse_resources(b"<html>502</html>", "home")


def test_empty_data() -> None:
    result = parse_resources('{"data": []}', "home")
    assert result.guests == []
    assert result.nodes == []


_numeric_text = st.from_regex(
    r"-?[0-9]{0,400}(\.[0-9]*)?(e-?[0-9]{1,4})?|-?inf|nan", fullmatch=True
)
_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | _numeric_text
)
_entries = st.dictionaries(
    st.sampled_from(
        ["type", "vmid", "node", "status", "name", "tags", "template", "cpu", "mem", "uptime"]
    ),
    _json_scalars | st.sampled_from(["lxc", "qemu", "node", "101", "pve"]),
)


@given(st.lists(_entries | _json_scalars, max_size=20))
def test_parse_never_raises_on_odd_entries(items: list[object]) -> None:
    result = parse_resources(json.dumps({"data": items}), "c")
    for g in result.guests:
        assert g.vmid > 0
        assert g.node
        assert g.id == f"{g.type}/{g.vmid}"
        assert isinstance(g.name, str)
    for n in result.nodes:
        assert n.name
