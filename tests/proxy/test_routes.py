"""The route table and header rewriting on their own (no sockets)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.proxy.headers import (
    TrustedProxies,
    client_response_headers,
    upstream_request_headers,
)
from pxproxy.proxy.routes import RouteTable, normalise_host
from pxproxy.proxy.upstream import GuestAmbiguous, GuestUnknown, NoAddress, resolve

from .conftest import routes, snapshot_guest


def test_normalise_host_strips_port_case_and_trailing_dot() -> None:
    assert normalise_host("Wiki.Example.COM.:8443") == "wiki.example.com"
    assert normalise_host("[::1]:80") == "::1"
    assert normalise_host("::1") == "::1"
    assert normalise_host("") == ""


def test_exact_beats_wildcard_and_longest_wildcard_wins() -> None:
    table = RouteTable(
        routes(
            {"host": "*.example.com", "guest": "a", "port": 80},
            {"host": ["x.a.example.com", "*.a.example.com"], "guest": "b", "port": 80},
            {"listen": "0.0.0.0:25565", "guest": "c", "port": 25565},
            {"host": "plain.test", "guest": "d", "port": 80},
        )
    )

    def target(host: str) -> tuple[str, int, str] | None:
        found = table.match(host)
        return None if found is None else (found.route.guest, found.route_index, found.name)

    assert target("X.A.Example.com:8080") == ("b", 1, "x.a.example.com")
    assert target("y.z.a.example.com") == ("b", 1, "x.a.example.com")
    assert target("q.example.com") == ("a", 0, "*.example.com")
    # A wildcard does not cover its own apex.
    assert target("example.com") is None
    assert target("plain.test.") == ("d", 3, "plain.test")
    assert table.match("nothing.test") is None
    assert [m.route_index for m in table.routes] == [0, 1, 3]


def test_resolve_reports_unknown_ambiguous_and_no_address() -> None:
    snap = Snapshot(
        {
            "lab": ClusterSnapshot.build(
                "lab",
                [
                    snapshot_guest(101, "wiki", ()),
                    snapshot_guest(102, "twin", ("10.0.0.2",)),
                    snapshot_guest(103, "twin", ("10.0.0.3",)),
                    snapshot_guest(104, "v6", ("fd00::4", "10.0.0.4")),
                ],
                (),
            )
        }
    )
    (wiki, twin, v6, gone) = routes(
        {"host": "w.test", "guest": "wiki", "port": 80},
        {"host": "t.test", "guest": "twin", "port": 80},
        {"host": "v.test", "guest": "v6", "port": 443, "scheme": "https"},
        {"host": "g.test", "guest": "gone", "port": 80},
    )
    with pytest.raises(NoAddress, match="no IP address yet"):
        resolve(snap, wiki)
    with pytest.raises(GuestAmbiguous, match="lab:102, lab:103"):
        resolve(snap, twin)
    with pytest.raises(GuestUnknown, match="'gone'"):
        resolve(snap, gone)
    assert resolve(snap, v6).origin == "https://[fd00::4]:443"


def _headers(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    return list(pairs)


def _view(fields: list[tuple[str, str]]) -> CIMultiDict[str]:
    return CIMultiDict(fields)


def test_untrusted_forwarding_headers_are_replaced_and_hop_by_hop_dropped() -> None:
    incoming = _headers(
        ("Host", "wiki.test"),
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic x"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Host", "evil.test"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("Cookie", "a=1"),
    )
    fields = upstream_request_headers(
        incoming, host="wiki.test", peer="::1", proto="http", trusted=False
    )
    out = _view(fields)
    assert fields[0] == ("Host", "wiki.test")  # the authority routed by, once
    assert len(out.getall("Host")) == 1
    assert out["Cookie"] == "a=1"
    for gone in ("Connection", "X-Secret", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert gone not in out
    assert out["X-Forwarded-For"] == "::1"
    assert out["X-Forwarded-Host"] == "wiki.test"
    assert out["X-Forwarded-Proto"] == "http"
    assert out["X-Real-IP"] == "::1"
    assert out.getall("Forwarded") == ['for="[::1]";host="wiki.test";proto=http']


def test_trusted_forwarding_headers_are_appended_to() -> None:
    incoming = _headers(
        ("Host", "wiki.test"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("X-Forwarded-For", "10.0.0.9"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=1.2.3.4;proto=https"),
    )
    out = _view(
        upstream_request_headers(
            incoming, host="wiki.test", peer="10.0.0.1", proto="http", trusted=True
        )
    )
    assert out.getall("X-Forwarded-For") == ["1.2.3.4, 10.0.0.9, 10.0.0.1"]
    assert out["X-Forwarded-Proto"] == "https"
    assert out["Forwarded"] == 'for=1.2.3.4;proto=https, for=10.0.0.1;host="wiki.test";proto=http'


def test_response_hop_by_hop_dropped_repeated_headers_kept() -> None:
    out = client_response_headers(
        _headers(
            ("Connection", "X-Internal"),
            ("X-Internal", "y"),
            ("Transfer-Encoding", "chunked"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        )
    )
    assert out == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]


def test_framing_headers_from_either_side_are_never_passed_on() -> None:
    incoming = _headers(
        ("Host", "other.test"),
        ("Content-Length", "5"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
    )
    fields = upstream_request_headers(
        incoming, host="wiki.test", peer="10.0.0.1", proto="https", trusted=False
    )
    names = [name.lower() for name, _ in fields]
    assert "content-length" not in names
    assert "transfer-encoding" not in names
    assert "upgrade" not in names
    assert names.count("host") == 1
    assert _view(fields)["X-Forwarded-Proto"] == "https"
    response = client_response_headers(_headers(("Content-Length", "3"), ("X-A", "1")))
    assert response == [("X-A", "1")]


def test_trusted_proxies_networks() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
    assert "10.1.2.3" in trusted
    assert "::ffff:10.1.2.3" in trusted
    assert "fd00::1" in trusted
    assert "11.0.0.1" not in trusted
    assert "garbage" not in trusted
    assert None not in trusted
    assert "10.0.0.1" not in TrustedProxies([])
