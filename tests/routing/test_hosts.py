"""The route table refuses what is not a host, so no malformed name reaches a wildcard."""

from __future__ import annotations

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.routing.host_lookup import lookup_host
from pxproxy.routing.hosts import RouteTable, normalise_host

from ..builders import make_guest

TABLE = RouteTable(
    RouteConfig.model_validate(spec)
    for spec in (
        {"host": "wiki.t.test", "guest": "wiki", "port": 80},
        {"host": "raw.t.test", "guest": "raw", "port": 80},
        {"host": "*.wild.t.test", "guest": "wild", "port": 80},
        {"host": "10.1.2.3", "guest": "byip", "port": 80},
    )
)


@pytest.mark.parametrize(
    ("host", "route"),
    [
        ("wiki.t.test", "wiki.t.test"),
        ("WIKI.t.test.:8080", "wiki.t.test"),
        ("a.wild.t.test", "*.wild.t.test"),
        ("a.b.wild.t.test:1", "*.wild.t.test"),
        ("10.1.2.3:80", "10.1.2.3"),
    ],
)
def test_valid_hosts_match(host: str, route: str) -> None:
    found = TABLE.match(host)
    assert found is not None
    assert found.name == route


@pytest.mark.parametrize(
    "host",
    [
        ".wild.t.test",
        "x..wild.t.test",
        "..wild.t.test",
        "x.wild.t.test..",
        "wild.t.test",  # a wildcard does not cover its apex
        "raw.t.test:80@wiki.t.test",
        "wiki.t.test:80@raw.t.test",
        "wiki.t.test:abc",
        "wiki.t.test..",
        "[wiki.t.test]",
        "wiki.t.test:",
        "wiki.t.test:99999",
        "wiki.t.test\r\n",
        "wi ki.t.test",
        "",
    ],
)
def test_invalid_hosts_match_nothing(host: str) -> None:
    assert TABLE.match(host) is None


@pytest.mark.parametrize("name", [".wild.t.test", "x..wild.t.test", "x.wild.t.test.", "", "."])
def test_match_name_refuses_empty_labels_even_when_called_directly(name: str) -> None:
    assert TABLE.match_name(name) is None


def test_match_name_takes_the_routing_form() -> None:
    found = TABLE.match_name("q.wild.t.test")
    assert found is not None
    assert found.name == "*.wild.t.test"


def test_normalise_host() -> None:
    assert normalise_host("Wiki.Example.COM.:8443") == "wiki.example.com"
    assert normalise_host("[0::1]:80") == "::1"
    assert normalise_host("::1") == "::1"  # the API's ?host= may be a bare IPv6 address
    assert normalise_host(" wiki.t.test ") == "wiki.t.test"
    for bad in ("", ".wild.t.test", "x..wild.t.test", "a@b", "a:b", "::1%lo", "[a.b]"):
        assert normalise_host(bad) == ""


def test_the_api_host_lookup_refuses_the_same_hosts() -> None:
    wild = make_guest(7161, "wild", ips=("10.0.0.5",))
    raw = make_guest(7162, "raw", ips=("10.0.0.6",))
    snap = Snapshot({"home": ClusterSnapshot.build("home", [wild, raw], ())})
    found = lookup_host(TABLE, snap, "a.wild.t.test")
    assert found.route is not None
    assert [g.name for g in found.match.guests] == ["wild"]
    for host in (".wild.t.test", "x..wild.t.test", "raw.t.test:80@wiki.t.test"):
        found = lookup_host(TABLE, snap, host)
        assert found.route is None, host
        assert found.match.total == 0, host
