from __future__ import annotations

from pxproxy.check import resolved_dependency_problems
from pxproxy.config.dependencies import DependencyEdge, dependency_problems, route_edges
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot

from ..builders import make_guest, make_node
from .helpers import parse, problems_of, with_routes


def test_self_reference() -> None:
    lines = problems_of(
        with_routes(
            "- {host: a.example.com, guest: wiki, port: 80, idle: {depends_on: [db, Wiki]}}"
        )
    )
    assert lines == [
        "routes[0].idle.depends_on[1]: 'Wiki' is this route's own guest: a guest cannot wait "
        "for itself to be woken"
    ]


def test_self_reference_by_vmid_written_as_a_number() -> None:
    lines = problems_of(
        with_routes("- {host: a.example.com, guest: 101, port: 80, idle: {depends_on: [101]}}")
    )
    assert [line.split(":")[0] for line in lines] == ["routes[0].idle.depends_on[0]"]


def test_two_route_cycle_names_both_entries() -> None:
    lines = problems_of(
        with_routes(
            """
            - {host: a.example.com, guest: wiki, port: 80, idle: {depends_on: [db]}}
            - {host: b.example.com, guest: DB, port: 80, idle: {depends_on: [wiki]}}
            """
        )
    )
    assert lines == [
        "routes[0].idle.depends_on[0]: depends_on forms a cycle: wiki -> db -> wiki (with "
        "routes[1].idle.depends_on[0]); none of them could be woken first"
    ]


def test_a_three_guest_cycle_is_reported_once() -> None:
    lines = problems_of(
        with_routes(
            """
            - {host: a.example.com, guest: a, port: 80, idle: {depends_on: [b]}}
            - {host: b.example.com, guest: b, port: 80, idle: {depends_on: [c]}}
            - {listen: "127.0.0.1:9", guest: c, port: 80, idle: {depends_on: [a]}}
            """
        )
    )
    assert len(lines) == 1
    assert "a -> b -> c -> a" in lines[0]


def test_shared_dependencies_are_no_cycle() -> None:
    config = parse(
        with_routes(
            """
            - {host: a.example.com, guest: a, port: 80, idle: {depends_on: [db, cache]}}
            - {host: b.example.com, guest: b, port: 80, idle: {depends_on: [db]}}
            - {host: c.example.com, guest: cache, port: 80, idle: {depends_on: [db]}}
            - {host: d.example.com, guest: db, port: 80, idle: {}}
            """
        )
    )
    assert len(config.routes) == 4


def test_depends_on_without_idle_on_the_other_route_is_no_cycle() -> None:
    # b's route has no idle-watch: its depends_on does not exist, so a -> b is all there is.
    config = parse(
        with_routes(
            """
            - {host: a.example.com, guest: a, port: 80, idle: {depends_on: [b]}}
            - {host: b.example.com, guest: b, port: 80}
            """
        )
    )
    assert config.routes[1].idle is None


def test_key_function_joins_refs_to_one_guest() -> None:
    edges = [DependencyEdge("wiki", "db", "r0"), DependencyEdge("db", "101", "r1")]
    assert dependency_problems(edges) == []
    same = {"101": "wiki"}
    found = dependency_problems(edges, lambda ref: same.get(ref, ref), " (resolved)")
    assert [p.path for p in found] == ["r0"]
    assert found[0].message.startswith("depends_on forms a cycle (resolved): wiki -> db -> 101")


def test_route_edges_number_the_entries() -> None:
    assert route_edges([("routes[2].idle.depends_on", "a", ("b", "c"))]) == [
        DependencyEdge("a", "b", "routes[2].idle.depends_on[0]"),
        DependencyEdge("a", "c", "routes[2].idle.depends_on[1]"),
    ]


def test_check_finds_a_cycle_through_two_refs_of_one_guest() -> None:
    # Validation cannot know that 101 is wiki; `check` does after its poll.
    config = parse(
        with_routes(
            """
            - {host: a.example.com, guest: wiki, port: 80, idle: {depends_on: [db]}}
            - {host: b.example.com, guest: db, port: 80, idle: {depends_on: [101]}}
            """
        )
    )
    guests = [make_guest(101, "wiki"), make_guest(102, "db")]
    view = Snapshot({"home": ClusterSnapshot.build("home", guests, [make_node("pve")])})
    (problem,) = resolved_dependency_problems(config, view)
    assert problem.path == "routes[0].idle.depends_on[0]"
    assert "once refs are resolved to guests: wiki -> db -> 101" in problem.message
    # Refs that match no guest are compared by their text.
    empty = Snapshot({"home": ClusterSnapshot.build("home", [], [make_node("pve")])})
    assert resolved_dependency_problems(config, empty) == []
