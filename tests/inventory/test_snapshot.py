from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import (
    EMPTY,
    NO_MATCH,
    ClusterSnapshot,
    Match,
    Snapshot,
    canonical_ip,
)
from pxproxy.inventory.store import Inventory

from ..builders import make_guest, make_node


def single(*guests: Guest, nodes: tuple[str, ...] = ("pve",)) -> Snapshot:
    return Snapshot({"home": ClusterSnapshot.build("home", guests, [make_node(n) for n in nodes])})


WIKI = make_guest(101, "wiki", ips=("10.0.0.5", "fd00::5"), aliases=("docs", "kb"))
DB = make_guest(102, "db", kind="qemu", ips=("10.0.0.6",))


# ----------------------------------------------------------------- canonical_ip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", "10.0.0.5"),
        (" 10.0.0.5\n", "10.0.0.5"),
        ("fd00::5", "fd00::5"),
        ("[fd00::5]", "fd00::5"),
        ("FD00:0::5", "fd00::5"),
        ("fd00:0000:0000:0000:0000:0000:0000:0005", "fd00::5"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%6]", "fe80::1"),
        ("not-an-ip", None),
        ("", None),
        ("[]", None),
        ("10.0.0.256", None),
    ],
)
def test_canonical_ip(text: str, expected: str | None) -> None:
    assert canonical_ip(text) == expected


# ----------------------------------------------------------------- by IP


@pytest.mark.parametrize(
    "query", ["10.0.0.5", "fd00::5", "[fd00::5]", "FD00:0::5", "fd00::5%eth0", " fd00::5 "]
)
def test_lookup_ip_canonicalises(query: str) -> None:
    snap = single(WIKI, DB)
    assert snap.lookup_ip(query) == Match((WIKI,))


def test_lookup_ip_unknown_and_garbage() -> None:
    snap = single(WIKI, DB)
    assert snap.lookup_ip("10.9.9.9") == NO_MATCH
    assert snap.lookup_ip("wiki") == NO_MATCH
    assert snap.lookup_ip("") == NO_MATCH


def test_ip_of_running_guest_beats_stopped_one() -> None:
    stopped = make_guest(201, "old", status="stopped", ips=("10.0.0.9",))
    running = make_guest(202, "new", status="running", ips=("10.0.0.9",))
    for order in ((stopped, running), (running, stopped)):
        assert single(*order).lookup_ip("10.0.0.9") == Match((running,))


def test_two_running_guests_on_one_ip_are_ambiguous() -> None:
    a = make_guest(201, "a", ips=("10.0.0.9",))
    b = make_guest(202, "b", ips=("10.0.0.9",))
    match = single(a, b).lookup_ip("10.0.0.9")
    assert match.total == 2
    assert set(match.guests) == {a, b}


def test_two_stopped_guests_on_one_ip_are_ambiguous() -> None:
    a = make_guest(201, "a", status="stopped", ips=("10.0.0.9",))
    b = make_guest(202, "b", status="stopped", ips=("10.0.0.9",))
    assert set(single(a, b).lookup_ip("10.0.0.9").guests) == {a, b}


def test_running_beats_stopped_across_clusters() -> None:
    stopped = make_guest(100, "old", cluster="a", status="stopped", ips=("fd00::9",))
    running = make_guest(100, "new", cluster="b", ips=("fd00::9",))
    snap = Snapshot(
        {
            "a": ClusterSnapshot.build("a", [stopped], []),
            "b": ClusterSnapshot.build("b", [running], []),
        }
    )
    assert snap.lookup_ip("FD00::9") == Match((running,))


def test_lookup_ip_finds_a_node_when_no_guest_has_it() -> None:
    pve1 = make_node("pve1", ip="192.168.1.10")
    snap = Snapshot({"home": ClusterSnapshot.build("home", [WIKI], [pve1])})
    assert snap.lookup_ip("192.168.1.10") == Match((), (pve1,))
    assert snap.lookup_ip("[192.168.1.10]") == Match((), (pve1,))
    assert snap.lookup_ip("10.0.0.5") == Match((WIKI,))


def test_guest_beats_node_on_same_ip() -> None:
    guest = make_guest(300, "clash", ips=("192.168.1.10",))
    node = make_node("pve1", ip="192.168.1.10")
    snap = Snapshot({"home": ClusterSnapshot.build("home", [guest], [node])})
    assert snap.lookup_ip("192.168.1.10") == Match((guest,))


# ----------------------------------------------------------------- by hostname


@pytest.mark.parametrize(
    "query", ["wiki", "WIKI", "Wiki.Example.COM", "wiki.example.com.", " wiki ", "wiki."]
)
def test_lookup_host_by_name_and_first_label(query: str) -> None:
    assert single(WIKI, DB).lookup_host(query) == Match((WIKI,))


def test_lookup_host_prefers_full_name_over_first_label() -> None:
    full = make_guest(301, "web.example.com")
    short = make_guest(302, "web")
    snap = single(full, short)
    assert snap.lookup_host("web.example.com") == Match((full,))
    assert snap.lookup_host("web.other.org") == Match((short,))


def test_lookup_host_falls_back_to_alias() -> None:
    snap = single(WIKI, DB)
    assert snap.lookup_host("docs") == Match((WIKI,))
    assert snap.lookup_host("KB.example.com") == Match((WIKI,))


def test_lookup_host_name_beats_alias() -> None:
    named_kb = make_guest(400, "kb")
    snap = single(WIKI, named_kb)
    assert snap.lookup_host("kb.example.com") == Match((named_kb,))


def test_lookup_host_falls_back_to_node_names() -> None:
    snap = single(WIKI, nodes=("pve1", "pve2"))
    match = snap.lookup_host("PVE2.lan")
    assert match.guests == ()
    assert [n.name for n in match.nodes] == ["pve2"]


def test_lookup_host_guest_beats_node() -> None:
    guest = make_guest(500, "pve1")
    snap = single(guest, nodes=("pve1",))
    assert snap.lookup_host("pve1") == Match((guest,))


@pytest.mark.parametrize("query", ["", " ", ".", "nothing.example.com"])
def test_lookup_host_misses(query: str) -> None:
    assert single(WIKI).lookup_host(query) == NO_MATCH


def test_lookup_host_same_name_is_ambiguous() -> None:
    a = make_guest(101, "web", cluster="a")
    b = make_guest(101, "web", cluster="b")
    snap = Snapshot(
        {"a": ClusterSnapshot.build("a", [a], []), "b": ClusterSnapshot.build("b", [b], [])}
    )
    assert set(snap.lookup_host("web.example.com").guests) == {a, b}


# ----------------------------------------------------------------- by alias


@pytest.mark.parametrize("query", ["docs", "DOCS", " kb "])
def test_lookup_alias(query: str) -> None:
    assert single(WIKI, DB).lookup_alias(query) == Match((WIKI,))


def test_lookup_alias_does_not_match_names() -> None:
    assert single(WIKI, DB).lookup_alias("wiki") == NO_MATCH


def test_alias_shared_by_two_guests() -> None:
    a = make_guest(1001, "a", aliases=("shared",))
    b = make_guest(1002, "b", aliases=("shared",))
    assert set(single(a, b).lookup_alias("shared").guests) == {a, b}


# ----------------------------------------------------------------- by ref

HOME_WEB = make_guest(100, "web", cluster="home", node="pve1")
HOME_DB = make_guest(101, "db", cluster="home", node="pve1", kind="qemu")
LAB_WEB = make_guest(100, "web", cluster="lab", node="pve1")
LAB_CI = make_guest(200, "ci", cluster="lab", node="lab1")


def two_clusters() -> Snapshot:
    return Snapshot(
        {
            "home": ClusterSnapshot.build("home", [HOME_WEB, HOME_DB], [make_node("pve1")]),
            "lab": ClusterSnapshot.build(
                "lab",
                [LAB_WEB, LAB_CI],
                [make_node("pve1", cluster="lab"), make_node("lab1", cluster="lab")],
            ),
        }
    )


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("db", [HOME_DB]),
        ("DB", [HOME_DB]),
        ("101", [HOME_DB]),
        (" 101 ", [HOME_DB]),
        ("pve1/101", [HOME_DB]),
        ("home:101", [HOME_DB]),
        ("qemu/101", [HOME_DB]),
        ("lxc/101", []),
        ("ci", [LAB_CI]),
        ("lab1/200", [LAB_CI]),
        ("lab:200", [LAB_CI]),
        ("home:200", []),
        ("nowhere:100", []),
        ("pve1/200", []),
        ("home:100", [HOME_WEB]),
        ("lab:100", [LAB_WEB]),
        ("999", []),
        ("nothing", []),
        ("", []),
    ],
)
def test_lookup_ref(ref: str, expected: list[Guest]) -> None:
    assert list(two_clusters().lookup_ref(ref).guests) == expected


@pytest.mark.parametrize("ref", ["100", "web", "lxc/100", "pve1/100"])
def test_lookup_ref_ambiguous_across_clusters(ref: str) -> None:
    match = two_clusters().lookup_ref(ref)
    assert set(match.guests) == {HOME_WEB, LAB_WEB}


@pytest.mark.parametrize(
    "ref", ["²", "١٠١", "home:١٠١", "pve1/²", "1" * 5000, "home:" + "1" * 5000, "1234567890"]
)
def test_lookup_ref_odd_digits_do_not_raise(ref: str) -> None:
    assert two_clusters().lookup_ref(ref) == NO_MATCH


def test_single_cluster_type_id_ref() -> None:
    snap = single(WIKI, DB)
    assert snap.lookup_ref("lxc/101") == Match((WIKI,))
    assert snap.lookup_ref("qemu/102") == Match((DB,))
    assert snap.lookup_ref("qemu/101") == NO_MATCH


def test_node_lookup() -> None:
    snap = two_clusters()
    assert [(n.cluster, n.name) for n in snap.node("PVE1").nodes] == [
        ("home", "pve1"),
        ("lab", "pve1"),
    ]
    assert [(n.cluster, n.name) for n in snap.node("lab1").nodes] == [("lab", "lab1")]
    assert snap.node("nope") == NO_MATCH


# ----------------------------------------------------------------- snapshot shape


def test_guests_sorted_by_vmid_and_merged() -> None:
    snap = two_clusters()
    assert [g.ref for g in snap.guests] == ["home:100", "home:101", "lab:100", "lab:200"]
    assert len(snap.nodes) == 3


def test_failed_keeps_data_and_indexes() -> None:
    built = ClusterSnapshot.build("home", [WIKI], [make_node("pve")], last_success=50.0)
    stale = built.failed("connection refused")
    assert stale.ok is False
    assert stale.error == "connection refused"
    assert stale.guests == built.guests
    assert stale.by_ip is built.by_ip
    assert stale.age_s(now=80.0) == 30.0
    assert Snapshot({"home": stale}).lookup_ip("10.0.0.5") == Match((WIKI,))


def test_never_polled_cluster_has_no_age() -> None:
    cs = ClusterSnapshot("home", (), (), ok=False, error="boom")
    assert cs.age_s() is None


def test_empty_snapshot() -> None:
    assert EMPTY.guests == ()
    assert EMPTY.nodes == ()
    assert EMPTY.lookup_ip("10.0.0.1") == NO_MATCH
    assert EMPTY.lookup_ref("100") == NO_MATCH
    assert EMPTY.lookup_host("x") == NO_MATCH


# ----------------------------------------------------------------- inventory store


async def test_inventory_publish_and_wait() -> None:
    inventory = Inventory()
    assert inventory.snapshot.guests == ()

    async def later() -> None:
        inventory.publish(ClusterSnapshot.build("home", [], []))
        inventory.publish(ClusterSnapshot.build("home", [WIKI], []))

    task = asyncio.create_task(later())
    snap = await inventory.wait_until(lambda s: bool(s.guests), timeout_s=5)
    await task
    assert snap.guests == (WIKI,)
    assert inventory.snapshot is snap


async def test_inventory_wait_times_out() -> None:
    with pytest.raises(TimeoutError):
        await Inventory().wait_until(lambda s: bool(s.guests), timeout_s=0.01)


# ----------------------------------------------------------------- never raises


@given(st.text(max_size=300))
def test_lookups_never_raise(text: str) -> None:
    for snap in (single(WIKI, DB, nodes=("pve", "pve2")), two_clusters(), EMPTY):
        for found in (
            snap.lookup_ip(text),
            snap.lookup_host(text),
            snap.lookup_alias(text),
            snap.lookup_ref(text),
            snap.node(text),
        ):
            assert isinstance(found, Match)
            assert found.total >= 0
    assert canonical_ip(text) is None or isinstance(canonical_ip(text), str)


@given(
    st.from_regex(r"[0-9٠-٩²³¹]{1,12}", fullmatch=True)
    | st.builds(lambda a, b: f"{a}:{b}", st.sampled_from(["home", "lab"]), st.integers(0, 10**12))
    | st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["pve1", "lxc"]), st.integers(0, 10**12))
)
def test_ref_lookups_never_raise_on_digit_like_refs(ref: str) -> None:
    match = two_clusters().lookup_ref(ref)
    assert all(isinstance(g, Guest) for g in match.guests)
