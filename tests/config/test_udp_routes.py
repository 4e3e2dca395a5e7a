"""UDP routes in the config: `protocol: udp` on a `listen:` route, its `udp:` settings, and
its listener in the clash check (a UDP port is not a TCP port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproxy.config.loader import parse_config
from pxproxy.config.models import DEFAULT_UDP

from .helpers import parse, problems_of, with_routes


def test_a_udp_route_with_its_settings() -> None:
    config = parse(
        with_routes(
            """
            - listen: "0.0.0.0:34197"
              protocol: udp
              guest: factorio
              port: 34197
              udp: {session_timeout: 2m, max_sessions: 64, buffer_datagrams: 32}
              idle: {timeout: 30m}
            """
        )
    )
    route = config.routes[0]
    assert (route.protocol, route.listen, route.port) == ("udp", "0.0.0.0:34197", 34197)
    assert route.udp is not None
    assert (route.udp.session_timeout, route.udp.max_sessions) == (120.0, 64)
    assert route.udp.buffer_bytes == DEFAULT_UDP.buffer_bytes


def test_a_listen_route_is_tcp_unless_it_says_otherwise() -> None:
    config = parse(with_routes('- {listen: "0.0.0.0:25565", guest: mc, port: 25565}\n'))
    assert (config.routes[0].protocol, config.routes[0].udp) == ("tcp", None)


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            "{host: mc.example.com, protocol: udp, guest: mc, port: 80}",
            "routes[0]: protocol is for listen routes (TCP or UDP), not host routes",
        ),
        (
            "{host: mc.example.com, protocol: tcp, guest: mc, port: 80}",
            "routes[0]: protocol is for listen routes (TCP or UDP), not host routes",
        ),
        (
            '{listen: ":25565", guest: mc, port: 25565, udp: {max_sessions: 4}}',
            "routes[0]: udp settings are for routes with protocol: udp",
        ),
    ],
)
def test_misplaced_keys_are_refused(route: str, message: str) -> None:
    assert problems_of(with_routes(f"- {route}\n")) == [message]


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("protocol: sctp", "routes[0].protocol"),
        ("udp: {session_timeout: 0s}", "routes[0].udp.session_timeout"),
        ("udp: {max_sessions: 0}", "routes[0].udp.max_sessions"),
        ("udp: {buffer_bytes: 100}", "routes[0].udp.buffer_bytes"),
        ("udp: {buffer: 10}", "routes[0].udp.buffer"),
    ],
)
def test_bad_udp_values_name_their_key(setting: str, key: str) -> None:
    text = with_routes(
        f'- {{listen: ":34197", protocol: udp, guest: f, port: 34197, {setting}}}\n'
        if "protocol" not in setting
        else f'- {{listen: ":34197", guest: f, port: 34197, {setting}}}\n'
    )
    lines = problems_of(text)
    assert len(lines) == 1
    assert lines[0].startswith(f"{key}: ")


def test_a_tcp_and_a_udp_route_may_share_a_port() -> None:
    """Satisfactory: 7777 TCP (its HTTPS API) and 7777 UDP (the game)."""
    config = parse(
        with_routes(
            """
            - {listen: "0.0.0.0:7777", guest: sf, port: 7777}
            - {listen: "0.0.0.0:7777", protocol: udp, guest: sf, port: 7777}
            """
        )
    )
    assert [r.protocol for r in config.routes] == ["tcp", "udp"]


def test_two_udp_routes_on_one_port_clash() -> None:
    lines = problems_of(
        with_routes(
            """
            - {listen: "0.0.0.0:34197", protocol: udp, guest: a, port: 34197}
            - {listen: "127.0.0.1:34197", protocol: udp, guest: b, port: 34197}
            """
        )
    )
    assert lines == [
        "routes[1].listen: 127.0.0.1:34197 clashes with routes[0].listen (0.0.0.0:34197): a "
        "wildcard address takes port 34197 on every IPv4 address; give one of them another port"
    ]


def test_a_udp_route_clashes_with_the_dns_responder_but_not_with_the_api() -> None:
    lines = problems_of(
        with_routes(
            """
            - {listen: "127.0.0.1:5353", protocol: udp, guest: a, port: 5353}
            - {listen: "127.0.0.1:8081", protocol: udp, guest: b, port: 8081}
            """,
            extra='dns: {listen: "127.0.0.1:5353"}\nlisten: {api: "127.0.0.1:8081"}\n',
        )
    )
    assert lines == [
        "dns.listen: 127.0.0.1:5353 clashes with routes[0].listen (127.0.0.1:5353): the same "
        "address and port; give one of them another port"
    ]


def test_the_example_config_states_the_udp_defaults() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yml"
    env = {"PVE_TOKEN_SECRET": "token-secret", "OPS_TOKEN": "ops-token-0123456789"}
    config = parse_config(example.read_text(encoding="utf-8"), env=env)
    (route,) = [r for r in config.routes if r.protocol == "udp"]
    assert route.udp == DEFAULT_UDP
    assert config.notes.udp is False
