"""The CLI's pure parts: tables, spans, the lookup kind, the old exec spelling, problem text."""

from __future__ import annotations

import json

import pytest

from pxproxy.client_cli import _legacy_node_vmid
from pxproxy.client_format import duration, guests_table, routes_table, table
from pxproxy.client_http import MAX_CANDIDATES, problem_message
from pxproxy.client_inventory import lookup_kind


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (303, "5m 3s"), (14_700, "4h 5m"), (273_600, "3d 4h")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_table_aligns_columns_without_trailing_spaces() -> None:
    assert table(["A", "BB"], [["xxx", "y"], ["z", ""]]).splitlines() == [
        "A    BB",
        "xxx  y",
        "z",
    ]


def test_guests_table_shows_the_cluster_only_when_several() -> None:
    one = {"cluster": "a", "vmid": 2, "name": "x", "node": "n", "type": "lxc"}
    two = dict(one, vmid=1, status="running", uptime=90, ips=["10.0.0.1", "fd00::1"])
    lines = guests_table([one, two]).splitlines()
    assert lines[0].split()[0] == "NAME"
    assert lines[1].split() == ["x", "1", "n", "lxc", "running", "10.0.0.1,fd00::1", "1m", "30s"]
    assert lines[2].split() == ["x", "2", "n", "lxc", "-", "-", "-"]
    lines = guests_table([one, dict(one, cluster="b")]).splitlines()
    assert lines[0].split()[0] == "CLUSTER"
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]


def test_routes_table_tcp_and_http() -> None:
    text = routes_table(
        [
            {"host": ["a.test", "b.test"], "path_prefix": "/x", "guest": "g", "port": 80,
             "scheme": "http", "idle": {"stop_method": "suspend", "timeout_s": 600},
             "state": "asleep"},
            {"listen": "0.0.0.0:2222", "guest": "h", "port": 22, "idle": None, "state": "ready"},
        ]
    )  # fmt: skip
    rows = [line.split("  ") for line in text.splitlines()[1:]]
    assert [c.strip() for c in rows[0] if c.strip()] == [
        "a.test,b.test/x",
        "g",
        "http:80",
        "suspend after 10m",
        "asleep",
    ]
    assert [c.strip() for c in rows[1] if c.strip()] == [
        "tcp 0.0.0.0:2222",
        "h",
        "22",
        "-",
        "ready",
    ]


def test_routes_table_shows_a_before_stop_under_way() -> None:
    idle = {"stop_method": "shutdown", "timeout_s": 1800}
    text = routes_table(
        [
            {"listen": "0.0.0.0:25565", "guest": "mc", "port": 25565, "idle": idle,
             "state": "ready", "stopping": {"step": "grace", "stopping_in_s": 41.2}},
            {"listen": "0.0.0.0:2456", "guest": "vh", "port": 2456, "idle": idle,
             "state": "ready", "stopping": {"step": "command", "stopping_in_s": None}},
            {"listen": "0.0.0.0:2457", "guest": "x", "port": 2457, "idle": idle,
             "state": "ready", "stopping": None},
        ]
    )  # fmt: skip
    states = [line.split("  ")[-1].strip() for line in text.splitlines()[1:]]
    assert states == ["ready (stopping in 42s)", "ready (before_stop running)", "ready"]


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("10.0.0.5", "ip"),
        ("fd00::5", "ip"),
        ("[fd00::5]", "ip"),
        ("fe80::1%eth0", "ip"),
        ("wiki.example.com", "host"),
        ("10.0.0", "host"),
        ("wiki", "host"),
    ],
)
def test_lookup_kind(query: str, kind: str) -> None:
    assert lookup_kind(query) == kind


@pytest.mark.parametrize(
    ("ref", "rest", "expected"),
    [
        ("pve1", ["101", "--", "true"], ("pve1/101", ["--", "true"])),
        ("wiki", ["--", "101"], ("wiki", ["--", "101"])),
        ("wiki", ["echo", "1"], ("wiki", ["echo", "1"])),
        ("101", ["5"], ("101", ["5"])),  # a vmid is no node
        ("pve1/101", ["7"], ("pve1/101", ["7"])),
        ("lab:101", ["7"], ("lab:101", ["7"])),
        ("pve1", ["1234567890"], ("pve1", ["1234567890"])),  # too long for a vmid
    ],
)
def test_old_exec_spelling(ref: str, rest: list[str], expected: tuple[str, list[str]]) -> None:
    assert _legacy_node_vmid(ref, rest) == expected


def test_problem_message_lists_candidates_and_caps_them() -> None:
    doc = {
        "detail": "3 guests match ref 'web'",
        "candidates": [
            {"ref": "a:1", "vmid": 1, "name": "web", "node": "n1", "status": "running"},
            {"ref": "b:1", "vmid": 1, "name": "", "node": "n2", "status": "stopped"},
            {"node": "n3", "cluster": "c", "ip": "10.0.0.3"},
        ],
    }
    lines = problem_message(409, "Conflict", json.dumps(doc), True).splitlines()
    assert lines[0] == "409 Conflict: 3 guests match ref 'web'"
    assert lines[1].split() == ["a:1", "web", "node", "n1,", "running"]
    assert lines[2].split() == ["b:1", "-", "node", "n2,", "stopped"]
    assert lines[3].strip() == "node c:n3  10.0.0.3"
    many = {"detail": "d", "candidates": [{"vmid": i, "ref": f"a:{i}"} for i in range(25)]}
    lines = problem_message(409, "Conflict", json.dumps(many), True).splitlines()
    assert len(lines) == 1 + MAX_CANDIDATES + 1
    assert lines[-1].strip() == "... and 5 more"
    assert problem_message(502, "Bad Gateway", "<html>x</html>\n", True) == (
        "502 Bad Gateway: <html>x</html>"
    )
