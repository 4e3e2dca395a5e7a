from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.inventory.ingest import (
    NodeEntry,
    Rejection,
    Resources,
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


def entry(vmid: int = 101, kind: str = "lxc", /, **fields: object) -> dict[str, object]:
    """A guest entry with the fields PVE always sends, then `fields` (which may override)."""
    out: dict[str, object] = {
        "id": f"{kind}/{vmid}",
        "type": kind,
        "vmid": vmid,
        "node": "pve",
        "status": "running",
    }
    out.update(fields)
    return out


def only_rejection(result: Resources) -> Rejection:
    assert len(result.rejected) == 1, result.rejected
    return result.rejected[0]


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
    lxc = PVE8_LXC.replace('"vmid":100', '"vmid":101').replace("lxc/100", "lxc/101")
    result = parse_resources('{"data":[' + PVE8_QEMU + "," + lxc + "]}", "home")
    assert [g.id for g in result.guests] == ["qemu/100", "lxc/101"]
    assert result.nodes == []
    assert result.rejected == []


def test_both_samples_in_one_cluster_share_a_vmid_so_the_second_is_rejected() -> None:
    # The two recordings come from different clusters; in one cluster a vmid is one guest.
    result = parse_resources('{"data":[' + PVE8_QEMU + "," + PVE8_LXC + "]}", "home")
    assert [g.id for g in result.guests] == ["qemu/100"]
    assert only_rejection(result) == Rejection(
        "lxc/100", "guest", 100, "duplicate", "vmid already used by qemu/100"
    )


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
    g = only_guest(body(entry(9000, "qemu", template=flag)))
    assert g.template is True


@pytest.mark.parametrize("flag", [0, "0", False, None])
def test_template_flag_off(flag: object) -> None:
    assert only_guest(body(entry(9000, "qemu", template=flag))).template is False


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
    g = only_guest(body(entry(101, tags="web;alias.Docs;alias.kb;alias.;aliasx")))
    assert g.tags == ("web", "alias.Docs", "alias.kb", "alias.", "aliasx")
    assert g.aliases == ("docs", "kb")


def test_tag_aliases_helper() -> None:
    assert tag_aliases(("alias.Wiki", "alias.", "other")) == ("wiki",)


def test_lock_pool_hastate() -> None:
    g = only_guest(
        body(entry(100, "qemu", status="stopped", lock="suspended", pool="", hastate="started"))
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


# ------------------------------------------------------------------ per-entry validation

GOOD = entry(200)
HUGE = 99999999999999999999


@pytest.mark.parametrize(
    "other",
    [
        {"type": "storage", "storage": "local", "node": "pve", "id": "storage/pve/local"},
        {"type": "pool", "pool": "p", "id": "/pool/p"},
        {"type": "sdn", "sdn": "zone", "node": "pve", "id": "sdn/pve/zone"},
        {"type": "openvz", "vmid": 101, "node": "pve"},
    ],
)
def test_other_resource_types_are_skipped_not_rejected(other: object) -> None:
    result = parse_resources(body(other, GOOD), "home")
    assert [g.id for g in result.guests] == ["lxc/200"]
    assert result.rejected == []


@pytest.mark.parametrize(
    ("bad", "kind", "reason"),
    [
        # The fields PVE always sends: missing.
        ({**entry(101), "vmid": None}, "missing_field", "no vmid"),
        ({k: v for k, v in entry(101).items() if k != "vmid"}, "missing_field", "no vmid"),
        ({k: v for k, v in entry(101).items() if k != "id"}, "missing_field", "no id"),
        ({k: v for k, v in entry(101).items() if k != "node"}, "missing_field", "no node"),
        (entry(101, node=""), "missing_field", "no node"),
        ({k: v for k, v in entry(101).items() if k != "status"}, "missing_field", "no status"),
        (entry(101, status=""), "missing_field", "no status"),
        ({k: v for k, v in entry(101).items() if k != "type"}, "missing_field", "no type"),
        # ... or of the wrong type.
        (entry(101, vmid="three hundred"), "wrong_type", "vmid 'three hundred' is not an integer"),
        (entry(101, vmid=101.0), "wrong_type", "vmid 101.0 is not an integer"),
        (entry(101, vmid=True), "wrong_type", "vmid True is not an integer"),
        (entry(101, vmid="-101"), "wrong_type", "vmid '-101' is not an integer"),
        (entry(101, vmid=[101]), "wrong_type", "vmid [101] is not an integer"),
        (entry(101, node=7), "wrong_type", "node 7 is not a string"),
        (entry(101, node="../../access"), "wrong_type", "node '../../access' is not a node name"),
        (entry(101, node="pve 1"), "wrong_type", "node 'pve 1' is not a node name"),
        (entry(101, status=1), "wrong_type", "status 1 is not a string"),
        (entry(101, type=5), "wrong_type", "type 5 is not a string"),
        # Optional fields of the wrong type.
        (entry(101, name=5), "wrong_type", "name 5 is not a string"),
        (entry(101, name=["wiki"]), "wrong_type", "name ['wiki'] is not a string"),
        (entry(101, tags=["web"]), "wrong_type", "tags ['web'] is not a string"),
        (entry(101, lock=1), "wrong_type", "lock 1 is not a string"),
        (entry(101, pool={}), "wrong_type", "pool {} is not a string"),
        (entry(101, hastate=False), "wrong_type", "hastate False is not a string"),
        (entry(101, template=2), "wrong_type", "template 2 is not 0 or 1"),
        (entry(101, template="yes"), "wrong_type", "template 'yes' is not 0 or 1"),
        (entry(101, cpu="lots"), "wrong_type", "cpu 'lots' is not a number"),
        (entry(101, cpu=[]), "wrong_type", "cpu [] is not a number"),
        (entry(101, maxcpu=True), "wrong_type", "maxcpu True is not a number"),
        (entry(101, mem={}), "wrong_type", "mem {} is not a number"),
        (entry(101, uptime="1e999"), "wrong_type", "uptime '1e999' is not a number"),
        (entry(101, netin="nan"), "wrong_type", "netin 'nan' is not a number"),
        (entry(101, diskread="-inf"), "wrong_type", "diskread '-inf' is not a number"),
        (entry(101, maxmem="1" * 5000), "wrong_type", f"maxmem '{'1' * 17}...{'1' * 18}'"),
        (entry(101, maxcpu=10**400), "wrong_type", "a number is out of range"),
        # The id must say what type and vmid say.
        (entry(101, id="lxc/102"), "id_mismatch", "id 'lxc/102' does not match type and vmid"),
        (entry(101, id="qemu/101"), "id_mismatch", "id 'qemu/101' does not match type and vmid"),
        (entry(101, id=101), "id_mismatch", "id 101 does not match type and vmid lxc/101"),
        # vmids PVE cannot have.
        (entry(99), "vmid_range", "vmid 99 is outside 100..999999999"),
        (entry(0), "vmid_range", "vmid 0 is outside 100..999999999"),
        (entry(-5), "vmid_range", "vmid -5 is outside 100..999999999"),
        (entry(1_000_000_000), "vmid_range", "vmid 1000000000 is outside 100..999999999"),
        (entry(HUGE), "vmid_range", f"vmid {HUGE} is outside 100..999999999"),
        (entry(101, vmid=str(HUGE)), "vmid_range", f"vmid {HUGE} is outside"),
        (entry(101, vmid="1" * 5000), "vmid_range", "vmid '11111111111111111"),
    ],
)
def test_bad_entry_is_rejected_and_its_neighbours_survive(
    bad: dict[str, object], kind: str, reason: str
) -> None:
    result = parse_resources(body(entry(150), bad, GOOD), "home")
    assert [g.id for g in result.guests] == ["lxc/150", "lxc/200"]
    rejection = only_rejection(result)
    assert rejection.kind == kind
    assert rejection.reason.startswith(reason.split("...")[0])
    assert len(rejection.reason) < 120  # values are quoted bounded


def test_pve7_numeric_strings_are_not_rejected() -> None:
    result = parse_resources(
        body(entry(101, vmid=" 101 ", template="1", cpu="0.5", mem="12.0", uptime="7")), "c"
    )
    assert result.rejected == []
    assert result.guests[0].vmid == 101
    assert (result.guests[0].cpu, result.guests[0].mem, result.guests[0].uptime) == (0.5, 12, 7)


def test_null_optional_fields_read_as_absent() -> None:
    g = only_guest(body(entry(101, name=None, tags=None, lock=None, cpu=None, mem=None)))
    assert (g.name, g.tags, g.lock, g.cpu, g.mem) == ("", (), None, 0.0, 0)


def test_nan_and_infinity_literals_are_rejected() -> None:
    # json.loads accepts NaN and Infinity; a counter must be a finite number.
    text = body(entry(101), entry(102)).replace('"vmid": 101,', '"vmid": 101, "cpu": NaN,')
    text = text.replace('"vmid": 102,', '"vmid": 102, "mem": -Infinity,')
    result = parse_resources(text, "c")
    assert result.guests == []
    assert [(r.id, r.reason) for r in result.rejected] == [
        ("lxc/101", "cpu nan is not a number"),
        ("lxc/102", "mem -inf is not a number"),
    ]


def test_duplicate_id_keeps_the_first() -> None:
    first = entry(300, name="first")
    result = parse_resources(body(first, entry(300, name="second"), GOOD), "home")
    assert [(g.id, g.name) for g in result.guests] == [("lxc/300", "first"), ("lxc/200", "")]
    assert only_rejection(result) == Rejection("lxc/300", "guest", 300, "duplicate", "duplicate id")


def test_same_vmid_as_lxc_and_qemu_keeps_the_first() -> None:
    result = parse_resources(body(entry(300, "qemu"), entry(300, "lxc")), "home")
    assert [g.id for g in result.guests] == ["qemu/300"]
    assert only_rejection(result).reason == "vmid already used by qemu/300"


def test_a_rejected_entry_does_not_claim_its_vmid() -> None:
    # The first lxc/300 is bad; the good one after it is kept, not taken for a duplicate.
    result = parse_resources(body(entry(300, name=5), entry(300)), "home")
    assert [g.id for g in result.guests] == ["lxc/300"]
    assert only_rejection(result).reason == "name 5 is not a string"


@pytest.mark.parametrize("raw", ["a string", 42, None, ["list"]])
def test_entries_that_are_not_objects_are_rejected(raw: object) -> None:
    result = parse_resources(body(entry(150), raw), "home")
    assert [g.id for g in result.guests] == ["lxc/150"]
    expected = Rejection("entry #1", "unknown", None, "not_an_object", "not an object")
    assert only_rejection(result) == expected


@pytest.mark.parametrize(
    ("bad", "label", "vmid"),
    [
        (entry(300, vmid="three hundred"), "lxc/300", 300),  # from the id
        (entry(300, id=None, name=5), "lxc/300", 300),  # from type and vmid
        (entry(300, id="bad\nid\x1b[31m", name=5), "lxc/300", 300),  # unprintable id not shown
        (entry(300, id=None, vmid="x"), "entry #0", None),
        (entry(99), "lxc/99", None),  # no guest can have vmid 99
    ],
)
def test_rejections_name_the_guest_as_well_as_they_can(
    bad: dict[str, object], label: str, vmid: int | None
) -> None:
    rejection = only_rejection(parse_resources(body(bad), "home"))
    assert (rejection.id, rejection.vmid, rejection.entry) == (label, vmid, "guest")


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ({"type": "node", "status": "online"}, "missing_field"),
        ({"type": "node", "node": "", "status": "online"}, "missing_field"),
        ({"type": "node", "node": 5}, "wrong_type"),
        ({"type": "node", "node": "a/b"}, "wrong_type"),
        ({"type": "node", "node": "pve9", "id": "node/pve8"}, "id_mismatch"),
        ({"type": "node", "node": "pve9", "status": 1}, "wrong_type"),
        ({"type": "node", "node": "pve9", "cpu": "high"}, "wrong_type"),
        ({"type": "node", "node": "pve9", "mem": []}, "wrong_type"),
        ({"type": "node", "node": "pve"}, "duplicate"),
    ],
)
def test_bad_node_entries_are_rejected(bad: dict[str, object], kind: str) -> None:
    result = parse_resources(body({"type": "node", "node": "pve", "id": "node/pve"}, bad), "c")
    assert [n.name for n in result.nodes] == ["pve"]
    rejection = only_rejection(result)
    assert (rejection.entry, rejection.kind, rejection.vmid) == ("node", kind, None)


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
        ["id", "type", "vmid", "node", "status", "name", "tags", "template", "cpu", "mem", "uptime"]
    ),
    _json_scalars | st.sampled_from(["lxc", "qemu", "node", "101", "pve", "lxc/101", "qemu/101"]),
)


@given(st.lists(_entries | _json_scalars, max_size=20))
def test_parse_never_raises_on_odd_entries(items: list[object]) -> None:
    result = parse_resources(json.dumps({"data": items}), "c")
    for g in result.guests:
        assert 100 <= g.vmid <= 999_999_999
        assert g.node
        assert g.id == f"{g.type}/{g.vmid}"
        assert isinstance(g.name, str)
    assert len({g.vmid for g in result.guests}) == len(result.guests)
    for n in result.nodes:
        assert n.name
    # Every entry is accounted for: kept, rejected, or of a type that is not inventory.
    other = sum(
        1
        for i in items
        if isinstance(i, dict)
        and isinstance(i.get("type"), str)
        and i["type"] not in ("lxc", "qemu", "node")
    )
    assert len(result.guests) + len(result.nodes) + len(result.rejected) + other == len(items)


_good_entries = st.builds(
    lambda vmid, kind, name, cpu, mem, tags: entry(
        vmid, kind, name=name, cpu=cpu, mem=mem, tags=tags, template=0
    ),
    st.integers(100, 999_999_999),
    st.sampled_from(["lxc", "qemu"]),
    st.text(max_size=12),
    st.floats(0, 64) | st.integers(0, 64),
    st.integers(0, 2**50) | st.integers(0, 2**50).map(str),
    st.sampled_from(["", "web;alias.docs", "a,b"]),
)


@given(st.lists(_good_entries, max_size=10, unique_by=lambda e: e["vmid"]), st.data())
def test_well_formed_entries_survive_any_bad_neighbours(
    good: list[dict[str, object]], data: st.DataObject
) -> None:
    items: list[object] = list(good)
    for _ in range(data.draw(st.integers(0, 5))):
        items.insert(data.draw(st.integers(0, len(items))), data.draw(_entries | _json_scalars))
    result = parse_resources(json.dumps({"data": items}), "c")
    kept = {g.id: g for g in result.guests}
    vmids = {g.vmid for g in result.guests}
    for e in good:
        # Kept, unless a neighbour that is itself well formed came first with the same vmid.
        assert e["id"] in kept or e["vmid"] in vmids
        if e["id"] in kept:
            assert kept[str(e["id"])].name == e["name"]
