from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict

from pxproxy.config.listen_marker import UDP
from pxproxy.config.listener_clashes import (
    WILDCARD,
    Bind,
    clash_problems,
    endpoints,
    find_listeners,
    overlap,
)
from pxproxy.config.models import Config, ListenAddress
from pxproxy.config.raw_view import RawSection

from .helpers import MINIMAL, parse, problems_of


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", {("ipv4", WILDCARD)}),
        ("", {("ipv4", WILDCARD)}),
        ("::", {("ipv6", WILDCARD)}),
        ("0:0::0", {("ipv6", WILDCARD)}),
        ("127.0.0.1", {("ipv4", "127.0.0.1")}),
        ("0:0::1", {("ipv6", "::1")}),
        ("localhost", {("ipv4", "127.0.0.1"), ("ipv6", "::1")}),
        ("PVE.lan.", {("name", "pve.lan")}),
    ],
)
def test_endpoints(host: str, expected: set[tuple[str, str]]) -> None:
    assert endpoints(host) == expected


V4_WILDCARD = "a wildcard address takes port 8080 on every IPv4 address"
V6_WILDCARD = "a wildcard address takes port 8080 on every IPv6 address"
SAME = "the same address and port"


@pytest.mark.parametrize(
    ("first", "second", "why"),
    [
        ("0.0.0.0:8080", "127.0.0.1:8080", V4_WILDCARD),  # wildcard against a specific address
        ("127.0.0.1:8080", "0.0.0.0:8080", V4_WILDCARD),  # in either order
        (":8080", "10.0.0.1:8080", V4_WILDCARD),  # an empty host is the IPv4 wildcard
        ("127.0.0.1:8080", "127.0.0.1:8080", SAME),
        ("[::]:8080", "[::1]:8080", V6_WILDCARD),  # the IPv6 wildcard
        ("[fd00::1]:8080", "[::]:8080", V6_WILDCARD),
        ("[::1]:8080", "[0:0::1]:8080", SAME),  # one address, two spellings
        ("localhost:8080", "127.0.0.1:8080", SAME),
        ("localhost:8080", "[::1]:8080", SAME),
        ("pve.lan:8080", "PVE.lan:8080", SAME),
        # No clash:
        ("[::]:8080", "0.0.0.0:8080", None),  # same port, other family (IPV6_V6ONLY)
        ("[::1]:8080", "127.0.0.1:8080", None),
        ("127.0.0.1:8080", "127.0.0.2:8080", None),  # two specific addresses
        ("0.0.0.0:8080", "0.0.0.0:8081", None),  # other port
        ("127.0.0.1:0", "127.0.0.1:0", None),  # port 0: the kernel picks free ports
        ("0.0.0.0:0", "127.0.0.1:0", None),
        ("pve.lan:8080", "10.0.0.1:8080", None),  # a name is not resolved
    ],
)
def test_api_against_a_tcp_route(first: str, second: str, why: str | None) -> None:
    text = (
        MINIMAL
        + f"""
listen: {{proxy: "127.0.0.1:1", api: "{first}"}}
routes:
  - {{listen: "{second}", guest: mc, port: 25565}}
"""
    )
    if why is None:
        assert parse(text).routes[0].listen == second
        return
    assert problems_of(text) == [
        f"routes[0].listen: {second} clashes with listen.api ({first}): {why}; "
        "give one of them another port"
    ]


def test_defaults_are_listeners_too() -> None:
    # No listen section: the API's default 127.0.0.1:8081 still takes its port.
    lines = problems_of(MINIMAL + 'routes:\n  - {listen: "0.0.0.0:8081", guest: mc, port: 1}\n')
    assert lines == [
        "routes[0].listen: 0.0.0.0:8081 clashes with listen.api (default 127.0.0.1:8081): a "
        "wildcard address takes port 8081 on every IPv4 address; give one of them another port"
    ]


def test_every_pair_among_proxy_api_and_routes() -> None:
    lines = problems_of(
        MINIMAL
        + """
listen: {proxy: "0.0.0.0:9000", api: "127.0.0.1:9000"}
routes:
  - {listen: "127.0.0.1:9001", guest: a, port: 1}
  - {listen: "[::]:9001", guest: b, port: 1}
  - {listen: "127.0.0.1:9001", guest: c, port: 1}
"""
    )
    assert [line.split(" clashes with ")[0] for line in lines] == [
        "listen.api: 127.0.0.1:9000",
        "routes[2].listen: 127.0.0.1:9001",
    ]
    assert "listen.proxy (0.0.0.0:9000)" in lines[0]
    assert "routes[0].listen (127.0.0.1:9001)" in lines[1]


def test_a_broken_route_still_has_its_listener_checked() -> None:
    # routes[0] is invalid (port), yet its listen address parsed and clashes.
    lines = problems_of(
        MINIMAL + 'listen: {api: "127.0.0.1:7000"}\n'
        'routes:\n  - {listen: "127.0.0.1:7000", guest: a, port: 99999}\n'
    )
    assert [line.split(":")[0] for line in lines] == ["routes[0].listen", "routes[0].port"]


class _Dns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    listen: Annotated[str, UDP] | None = None


class _Future(BaseModel):
    """A config with a later listener: a UDP one in a section of its own."""

    model_config = ConfigDict(extra="forbid")
    api: ListenAddress = "127.0.0.1:8081"
    dns: _Dns = _Dns()
    extra: tuple[_Dns, ...] = ()


def test_later_listeners_are_found_by_their_marker() -> None:
    data = {"dns": {"listen": "0.0.0.0:8081"}, "extra": [{"listen": "127.0.0.1:8081"}, "junk"]}
    root = RawSection.of(_Future, data)
    assert root is not None
    binds = list(find_listeners(root))
    assert [(b.key, b.protocol, b.default) for b in binds] == [
        ("api", "tcp", True),
        ("dns.listen", "udp", False),
        ("extra[0].listen", "udp", False),
    ]
    # TCP and UDP on one port do not clash; two UDP listeners do.
    assert [p.path for p in clash_problems(binds)] == ["extra[0].listen"]


def test_overlap_is_symmetric() -> None:
    hosts = ["0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "10.0.0.1", "name"]
    for a in hosts:
        for b in hosts:
            assert (overlap(a, b) is None) == (overlap(b, a) is None), (a, b)


def test_each_later_listener_is_reported_once() -> None:
    binds = [Bind(f"k{i}", "0.0.0.0:80", "tcp", "0.0.0.0", 80) for i in range(3)]
    assert [p.path for p in clash_problems(binds)] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("listen", "dns", "clash"),
    [
        # dns.listen takes its port for UDP and for TCP (answers too big for UDP go over TCP).
        ('{proxy: "127.0.0.1:1", api: "127.0.0.1:5353"}', "127.0.0.1:5353", "listen.api"),
        ('{proxy: "0.0.0.0:53", api: "127.0.0.1:2"}', "127.0.0.1:53", "listen.proxy"),
        ('{proxy: "127.0.0.1:1", api: "127.0.0.1:2"}', "[::]:2", None),  # other family
        ('{proxy: "127.0.0.1:1", api: "127.0.0.1:2"}', "127.0.0.1:0", None),
    ],
)
def test_dns_listen_against_tcp_listeners(listen: str, dns: str, clash: str | None) -> None:
    text = MINIMAL + f'listen: {listen}\ndns: {{listen: "{dns}"}}\n'
    if clash is None:
        config = parse(text)
        assert config.dns is not None
        assert config.dns.listen == dns
        return
    [line] = problems_of(text)
    assert line.startswith(f"dns.listen: {dns} clashes with {clash} (")


def test_dns_listen_against_a_tcp_route() -> None:
    lines = problems_of(
        MINIMAL
        + 'dns: {listen: "0.0.0.0:5300"}\n'
        + 'routes:\n  - {listen: "127.0.0.1:5300", guest: mc, port: 25565}\n'
    )
    assert lines == [
        "dns.listen: 0.0.0.0:5300 clashes with routes[0].listen (127.0.0.1:5300): a wildcard "
        "address takes port 5300 on every IPv4 address; give one of them another port"
    ]


def test_dns_listen_is_a_udp_and_a_tcp_listener() -> None:
    root = RawSection.of(Config, {"proxmox": [], "dns": {}})
    assert root is not None
    binds = [b for b in find_listeners(root) if b.key == "dns.listen"]
    # The default address, once per protocol; the two never clash with each other.
    assert [(b.protocol, b.text, b.default) for b in binds] == [
        ("udp", "127.0.0.1:5353", True),
        ("tcp", "127.0.0.1:5353", True),
    ]
    assert clash_problems(binds) == []
    # No `dns:` key: no DNS listener at all.
    bare = RawSection.of(Config, {"proxmox": []})
    assert bare is not None
    assert not [b for b in find_listeners(bare) if b.key.startswith("dns")]
