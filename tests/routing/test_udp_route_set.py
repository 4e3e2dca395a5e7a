"""UDP routes in the route set: named and split apart from TCP routes, their ports claimed apart
from TCP ports, and declared ones gated by `notes.udp`."""

from __future__ import annotations

from pxproxy.config.companion import NotesPolicy
from pxproxy.config.models import RouteConfig
from pxproxy.routing.notes import parse_notes
from pxproxy.routing.route_set import Declared, merge


def _udp(listen: str, guest: str, port: int) -> RouteConfig:
    return RouteConfig(listen=listen, protocol="udp", guest=guest, port=port)


def _tcp(listen: str, guest: str, port: int) -> RouteConfig:
    return RouteConfig(listen=listen, guest=guest, port=port)


def test_udp_and_tcp_routes_are_told_apart() -> None:
    routes = merge([_tcp("0.0.0.0:7777", "sf", 7777), _udp("0.0.0.0:7777", "sf", 7777)], [])
    assert [r.name for r in routes.tcp()] == ["tcp:0.0.0.0:7777"]
    assert [r.name for r in routes.udp()] == ["udp:0.0.0.0:7777"]
    assert routes.http() == []


def test_declared_udp_routes_are_off_unless_the_config_allows_them() -> None:
    declared = [Declared("home:7", "factorio", (_udp("0.0.0.0:34197", "home:7", 34197),))]
    refused = merge([], declared, policy=NotesPolicy(tcp=True))
    assert refused.routes == ()
    assert "UDP routes from notes are off (notes: {udp: true} allows them)" in (
        refused.problems[0].error
    )
    allowed = merge([], declared, policy=NotesPolicy(udp=True))
    assert [r.name for r in allowed.routes] == ["udp:0.0.0.0:34197"]


def test_a_declared_udp_route_may_take_the_port_number_of_a_tcp_route() -> None:
    declared = [
        Declared(
            "home:8",
            "satisfactory",
            (_udp("0.0.0.0:7777", "home:8", 7777), _udp("0.0.0.0:15000", "home:8", 15000)),
        )
    ]
    routes = merge(
        [_tcp("0.0.0.0:7777", "sf-api", 7777), _udp("127.0.0.1:15000", "other", 15000)],
        declared,
        policy=NotesPolicy(udp=True),
    )
    assert [r.name for r in routes.routes if r.origin == "notes"] == ["udp:0.0.0.0:7777"]
    (problem,) = routes.problems
    assert "udp port 15000 is already routed by config route udp:127.0.0.1:15000" in problem.error


def test_pxproxy_s_own_ports_are_kept_from_declared_udp_routes_too() -> None:
    routes = merge(
        [],
        [Declared("home:9", "game", (_udp("0.0.0.0:5353", "home:9", 5353),))],
        reserved={5353: "pxproxy's DNS responder"},
        policy=NotesPolicy(udp=True),
    )
    assert routes.routes == ()
    assert "udp port 5353 is already routed by pxproxy's DNS responder" in (
        routes.problems[0].error
    )


def test_notes_can_declare_a_udp_route() -> None:
    notes = """A Factorio server.

```yaml
pxproxy:
  listen: "0.0.0.0:34197"
  protocol: udp
  port: 34197
  udp: {session_timeout: 90s}
```
"""
    (route,) = parse_notes(notes, "home:120")
    assert (route.protocol, route.guest, route.udp and route.udp.session_timeout) == (
        "udp",
        "home:120",
        90.0,
    )
