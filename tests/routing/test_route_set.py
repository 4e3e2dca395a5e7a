"""The merge of config routes and guests' declared routes: deterministic, config first, every
loser reported, one guest's problems never costing another guest its routes."""

from __future__ import annotations

import pytest

from pxproxy.config.companion import NotesPolicy
from pxproxy.config.models import RouteConfig
from pxproxy.routing.route_set import Declared, RouteStore, merge


def _http(host: str, guest: str, port: int = 80) -> RouteConfig:
    return RouteConfig(host=host, guest=guest, port=port)


def _tcp(listen: str, guest: str, port: int) -> RouteConfig:
    return RouteConfig(listen=listen, guest=guest, port=port)


def test_config_routes_win_and_the_loser_is_reported() -> None:
    declared = [
        Declared("home:120", "wiki", (_http("wiki.example.com", "home:120"),)),
        Declared("home:121", "docs", (_http("docs.example.com", "home:121"),)),
    ]
    routes = merge([_http("Wiki.Example.com.", "old-wiki")], declared)
    assert [(r.name, r.origin) for r in routes.routes] == [
        ("Wiki.Example.com.", "config"),
        ("docs.example.com", "notes"),
    ]
    (problem,) = routes.problems
    assert problem.guest == "home:120"
    assert "host wiki.example.com is already routed by config route Wiki.Example.com." in (
        problem.error
    )
    assert routes.table.match("docs.example.com") is not None


def test_between_guests_the_lower_vmid_wins_whatever_the_order_given() -> None:
    a = Declared("home:9", "a", (_http("x.example.com", "home:9"),))
    b = Declared("home:10", "b", (_http("x.example.com", "home:10"),))
    for order in ([a, b], [b, a]):
        routes = merge([], order)
        assert [r.owner for r in routes.routes] == ["home:9"]
        assert [p.guest for p in routes.problems] == ["home:10"]


def test_a_bad_block_is_reported_and_other_guests_keep_their_routes() -> None:
    routes = merge(
        [],
        [
            Declared("home:5", "broken", error="pxproxy.port: must be a whole number"),
            Declared("home:6", "fine", (_http("fine.example.com", "home:6"),)),
        ],
    )
    assert [r.owner for r in routes.routes] == ["home:6"]
    assert [(p.guest, p.error) for p in routes.problems] == [
        ("home:5", "pxproxy.port: must be a whole number")
    ]


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "0.0.0.0:8081", "[::1]:8081"])
def test_a_declared_tcp_route_cannot_take_a_port_of_pxproxy_itself(listen: str) -> None:
    routes = merge(
        [],
        [Declared("home:7", "game", (_tcp(listen, "home:7", 25565),))],
        reserved={8081: "pxproxy's API listener"},
        policy=NotesPolicy(tcp=True),
    )
    assert routes.routes == ()
    assert "port 8081 is already routed by pxproxy's API listener" in routes.problems[0].error


def test_the_store_publishes_only_real_changes_and_tells_listeners() -> None:
    store = RouteStore()
    seen: list[int] = []
    store.on_change(lambda routes: seen.append(routes.version))
    config = [_http("a.example.com", "a")]
    assert store.publish(config, ()) is True
    assert store.publish(config, ()) is False  # the same set: nobody is woken
    assert store.publish([*config, _http("b.example.com", "b")], ()) is True
    assert seen == [1, 2]
    assert [r.name for r in store.current.routes] == ["a.example.com", "b.example.com"]


def test_declared_tcp_routes_are_off_unless_the_config_allows_them() -> None:
    declared = [Declared("home:7", "game", (_tcp("0.0.0.0:2222", "home:7", 22),))]
    assert merge([], declared).routes == ()
    assert "TCP routes from notes are off" in merge([], declared).problems[0].error
    assert [r.name for r in merge([], declared, policy=NotesPolicy(tcp=True)).routes] == [
        "tcp:0.0.0.0:2222"
    ]


def test_a_config_wildcard_covers_the_names_below_it() -> None:
    """An exact name would beat the wildcard in the host table: a guest's notes must not
    take a name out of a config route that way, nor a narrower wildcard."""
    config = [_http("*.example.com", "web")]
    for host in ("mail.example.com", "*.a.example.com", "x.y.example.com"):
        routes = merge(config, [Declared("home:8", "evil", (_http(host, "home:8"),))])
        assert [r.origin for r in routes.routes] == ["config"]
        assert "covered by config route *.example.com" in routes.problems[0].error
    # A sibling domain is not covered.
    other = merge(config, [Declared("home:8", "ok", (_http("example.org", "home:8"),))])
    assert [r.name for r in other.routes] == ["*.example.com", "example.org"]


def test_notes_hosts_limits_what_guests_may_claim() -> None:
    policy = NotesPolicy(hosts=("*.apps.example.com", "wiki.example.com"))
    allowed = ["a.apps.example.com", "*.x.apps.example.com", "wiki.example.com"]
    refused = ["apps.example.com.evil", "bank.example.com", "*.example.com"]
    declared = [
        Declared(f"home:{i}", f"g{i}", (_http(h, f"home:{i}"),))
        for i, h in enumerate([*allowed, *refused], start=1)
    ]
    routes = merge([], declared, policy=policy)
    assert [r.name for r in routes.routes] == allowed
    assert len(routes.problems) == len(refused)
    assert all("not allowed by notes.hosts" in p.error for p in routes.problems)
    assert merge([], declared, policy=NotesPolicy(enabled=False)).routes == ()


def test_invalid_notes_keep_the_last_valid_routes_and_report() -> None:
    kept = Declared(
        "home:9", "wiki", (_http("wiki.example.com", "home:9"),), error="pxproxy.port: bad"
    )
    routes = merge([], [kept])
    assert [r.name for r in routes.routes] == ["wiki.example.com"]
    assert [p.error for p in routes.problems] == ["pxproxy.port: bad"]


def test_two_guests_wildcards_may_not_nest() -> None:
    """Traefik ranks declared wildcards alike, so `*.x.apps.example.com` of one guest inside
    `*.apps.example.com` of another would be a tie there: the later guest's is refused."""
    outer = Declared("home:20", "a", (_http("*.apps.example.com", "home:20"),))
    inner = Declared("home:21", "b", (_http("*.x.apps.example.com", "home:21"),))
    routes = merge([], [inner, outer])
    assert [r.owner for r in routes.routes] == ["home:20"]
    assert "overlaps *.apps.example.com of the notes of a (home:20)" in routes.problems[0].error
    # One guest's own nested wildcards both lead to it: no tie to worry about.
    own = Declared(
        "home:22",
        "c",
        (_http("*.b.example.org", "home:22"), _http("*.y.b.example.org", "home:22")),
    )
    assert len(merge([], [own]).routes) == 2
