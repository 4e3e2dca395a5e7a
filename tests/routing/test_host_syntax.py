"""The host grammar: what a Host header may be, and the one form it is routed by."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.routing.host_syntax import (
    INVALID_HOST,
    INVALID_PORT,
    MAX_LABEL_CHARS,
    MAX_NAME_CHARS,
    MISSING_HOST,
    Authority,
    BadAuthority,
    ipv6_host,
    parse_host,
    reg_name,
)

LONG_LABEL = "a" * MAX_LABEL_CHARS
# 4 labels of 63 and one of 1, with the dots: exactly MAX_NAME_CHARS.
LONGEST_NAME = ".".join([LONG_LABEL] * 3 + ["b" * 61])
assert len(LONGEST_NAME) == MAX_NAME_CHARS


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("wiki.t.test", "wiki.t.test", None),
        ("Wiki.T.TEST", "wiki.t.test", None),
        ("wiki.t.test.", "wiki.t.test", None),  # one trailing dot: the DNS root
        ("wiki.t.test:8080", "wiki.t.test", 8080),
        ("WIKI.t.test.:443", "wiki.t.test", 443),  # one trailing dot before a port
        ("localhost", "localhost", None),
        ("a", "a", None),
        ("under_score.t.test", "under_score.t.test", None),
        ("-edge-.t.test", "-edge-.t.test", None),  # a reg-name may; DNS rules are not ours
        ("10.1.2.3", "10.1.2.3", None),
        ("10.1.2.3:80", "10.1.2.3", 80),
        ("999.1.1.1", "999.1.1.1", None),  # not an IPv4 address, but a valid reg-name
        ("[::1]", "::1", None),
        ("[::1]:8080", "::1", 8080),
        ("[0:0:0:0:0:0:0:1]", "::1", None),  # IPv6 is routed by its compressed form
        ("[FD00::AB]", "fd00::ab", None),
        ("[::ffff:10.1.2.3]:1", "::ffff:a01:203", 1),
        ("x:0", "x", 0),
        ("x:65535", "x", 65535),
        ("x:00080", "x", 80),  # five digits, leading zeros
        (" wiki.t.test\t", "wiki.t.test", None),  # optional whitespace around a field value
        (LONG_LABEL + ".t.test", LONG_LABEL + ".t.test", None),
        (LONGEST_NAME, LONGEST_NAME, None),
        (LONGEST_NAME + ".", LONGEST_NAME, None),
    ],
)
def test_valid_hosts(value: str, host: str, port: int | None) -> None:
    assert parse_host(value) == Authority(host, port)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", MISSING_HOST),
        (" \t ", MISSING_HOST),
        # the attack review's cases
        ("raw.t.test:80@wiki.t.test", INVALID_HOST),
        ("wiki.t.test:abc", INVALID_PORT),
        ("wiki.t.test..", INVALID_HOST),
        ("[wiki.t.test]", INVALID_HOST),
        (".wild.t.test", INVALID_HOST),
        ("x..wild.t.test", INVALID_HOST),
        # userinfo
        ("user@wiki.t.test", INVALID_HOST),
        ("@wiki.t.test", INVALID_HOST),
        ("user:pw@wiki.t.test:80", INVALID_HOST),
        # whitespace and control characters inside
        ("wiki .t.test", INVALID_HOST),
        ("wiki.t.test :80", INVALID_HOST),
        ("wiki.t.test: 80", INVALID_HOST),
        ("wiki\t.t.test", INVALID_HOST),
        ("wiki.t.test\r\nX: y", INVALID_HOST),
        ("wiki.t.test\n", INVALID_HOST),
        ("wiki.t.test\x00", INVALID_HOST),
        ("wiki\x7f.t.test", INVALID_HOST),
        ("wiki.t.test\x0b", INVALID_HOST),
        ("wiki.t.test\u00a0", INVALID_HOST),
        # ports
        ("wiki.t.test:", INVALID_PORT),  # RFC 3986 allows it; we do not
        ("wiki.t.test:65536", INVALID_PORT),
        ("wiki.t.test:99999", INVALID_PORT),
        ("wiki.t.test:000080", INVALID_PORT),  # more than 5 digits
        ("wiki.t.test:+80", INVALID_PORT),
        ("wiki.t.test:-1", INVALID_PORT),
        ("wiki.t.test:0x50", INVALID_PORT),
        ("wiki.t.test:8\u0660", INVALID_HOST),  # an Arabic-Indic digit: not ASCII
        ("wiki.t.test:80:80", INVALID_HOST),
        ("[::1]:", INVALID_PORT),
        ("[::1]80", INVALID_PORT),
        ("[::1]:abc", INVALID_PORT),
        ("[::1]]", INVALID_PORT),
        # reg-names
        (".", INVALID_HOST),
        ("..", INVALID_HOST),
        (".a", INVALID_HOST),
        ("a..b", INVALID_HOST),
        ("a.b..", INVALID_HOST),
        ("wiki%2et.test", INVALID_HOST),  # percent-encoding: refused
        ("wiki.t.test/", INVALID_HOST),
        ("wiki.t.test?", INVALID_HOST),
        ("wiki.t.test#", INVALID_HOST),
        ("wiki.t.test\\", INVALID_HOST),
        ("wi*ki.t.test", INVALID_HOST),
        ("wiki,t.test", INVALID_HOST),
        ("wiki.t.test,other.test", INVALID_HOST),
        ("wïki.t.test", INVALID_HOST),
        ("\u212a.t.test", INVALID_HOST),  # KELVIN SIGN: lowercases to an ASCII "k"
        ("xn--wiki-.t.test" + "a" * 300, INVALID_HOST),
        ("a" * (MAX_LABEL_CHARS + 1) + ".t.test", INVALID_HOST),
        (LONGEST_NAME + "b", INVALID_HOST),
        ("a[::1]", INVALID_HOST),
        ("wiki.t.test]", INVALID_HOST),
        # IPv6
        ("::1", INVALID_HOST),  # bare: its port could not be told apart
        ("fd00::1:80", INVALID_HOST),
        ("[::1", INVALID_HOST),
        ("[]", INVALID_HOST),
        ("[]:80", INVALID_HOST),
        ("[1.2.3.4]", INVALID_HOST),
        ("[::1%eth0]", INVALID_HOST),  # a zone id
        ("[fe80::1%25eth0]", INVALID_HOST),
        ("[v1.fe80::a+en1]", INVALID_HOST),  # IPvFuture
        ("[::g]", INVALID_HOST),
        ("[1:2:3:4:5:6:7:8:9]", INVALID_HOST),
        ("[[::1]]", INVALID_HOST),
        ("[ ::1]", INVALID_HOST),
    ],
)
def test_invalid_hosts(value: str, message: str) -> None:
    with pytest.raises(BadAuthority) as info:
        parse_host(value)
    assert str(info.value) == message


def test_bad_authority_never_echoes_the_input() -> None:
    with pytest.raises(BadAuthority) as info:
        parse_host("secret-token@wiki.t.test")
    assert "secret" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_text_is_what_goes_into_a_host_header() -> None:
    assert Authority("wiki.t.test").text == "wiki.t.test"
    assert Authority("wiki.t.test", 8080).text == "wiki.t.test:8080"
    assert Authority("::1").text == "[::1]"
    assert Authority("fd00::1", 443).text == "[fd00::1]:443"
    assert parse_host("WIKI.t.test.:0080").text == "wiki.t.test:80"


def test_helpers() -> None:
    assert reg_name("A.b.") == "a.b"
    assert reg_name("a.b..") is None
    assert reg_name("") is None
    assert ipv6_host("0::1") == "::1"
    assert ipv6_host("1.2.3.4") is None
    assert ipv6_host("::1%lo") is None
    assert ipv6_host("") is None


# ------------------------------------------------------------------ properties

_LABEL_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_label = st.text(alphabet=_LABEL_ALPHABET, min_size=1, max_size=MAX_LABEL_CHARS)
_names = (
    st.lists(_label, min_size=1, max_size=6)
    .map(".".join)
    .filter(lambda name: len(name) <= MAX_NAME_CHARS)
)
_ports = st.none() | st.integers(min_value=0, max_value=65535)
_ipv6 = st.ip_addresses(v=6).map(str)


@given(_names, _ports, st.booleans())
def test_names_round_trip(name: str, port: int | None, trailing_dot: bool) -> None:
    written = name + ("." if trailing_dot else "")
    if port is not None:
        written += f":{port}"
    parsed = parse_host(written)
    assert parsed == Authority(name.lower(), port)
    assert parse_host(parsed.text) == parsed


@given(_ipv6, _ports)
def test_ipv6_round_trips(address: str, port: int | None) -> None:
    parsed = parse_host(Authority(address, port).text)
    assert parsed.host == ipaddress.IPv6Address(address).compressed
    assert parsed.port == port
    assert parse_host(parsed.text) == parsed


@given(st.text(max_size=80))
def test_any_text_is_parsed_or_refused_with_bad_authority(text: str) -> None:
    try:
        parsed = parse_host(text)
    except BadAuthority as exc:
        message = str(exc)
        assert message in (INVALID_HOST, INVALID_PORT, MISSING_HOST)
        return
    # Whatever is accepted is already in its routing form and survives a second pass.
    assert parse_host(parsed.text) == parsed
    assert parsed.host == parsed.host.lower()
    assert not parsed.host.endswith(".")


_hostile = st.sampled_from([*list("@:[]%. \t\r\n\x00/?#\\,"), "..", "K", "é"])


@given(st.lists(_label | _hostile, min_size=1, max_size=12).map("".join))
def test_near_miss_names_are_parsed_or_refused(text: str) -> None:
    try:
        parsed = parse_host(text)
    except BadAuthority:
        return
    assert ".." not in parsed.host
    assert not parsed.host.startswith(".")
    assert "@" not in parsed.host
    assert parse_host(parsed.text) == parsed
