"""Guest allowlists: the entry grammar, the rule that an entry allows at most one guest, the
rate-limited warning, and `paths:` prefixes matched on path boundaries."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import pytest

from pxproxy.api.allowlist import GuestAllowlist
from pxproxy.api.auth import Principal
from pxproxy.config.allowlists import check_path_prefix, parse_guest_entry
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot, Snapshot
from pxproxy.streams.validation import ValidationError, validate_path

from ..builders import make_guest, make_node
from ..config.test_loader import MINIMAL, error_lines

CLUSTERS = ("home", "other")
HOME_WIKI = make_guest(101, "wiki", cluster="home", node="pve1")
HOME_DB = make_guest(102, "db", cluster="home", node="pve1")
HOME_WEB = make_guest(103, "web-1", cluster="home", node="pve1")
HOME_300 = make_guest(300, "files", cluster="home", node="pve1")
OTHER_WIKI = make_guest(200, "wiki", cluster="other", node="pve2")
OTHER_300 = make_guest(300, "backup", cluster="other", node="pve2")
HOME = (HOME_WIKI, HOME_DB, HOME_WEB, HOME_300)
OTHER = (OTHER_WIKI, OTHER_300)


def view(home: Iterable[Guest] = HOME, other: Iterable[Guest] | None = OTHER) -> Snapshot:
    clusters = {"home": ClusterSnapshot.build("home", home, [make_node("pve1", cluster="home")])}
    if other is not None:
        clusters["other"] = ClusterSnapshot.build(
            "other", other, [make_node("pve2", cluster="other")]
        )
    return Snapshot(clusters)


def allowed(entries: list[str], guest: Guest, snapshot: Snapshot | None = None) -> bool:
    allowlist = GuestAllowlist("t", entries)
    return allowlist.decide(guest, snapshot or view(), CLUSTERS).allowed


# ---------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("*", "all"),
        ("home:101", "cluster"),
        ("pve.example.com:101", "cluster"),
        ("pve1/101", "node"),
        ("lxc/101", "node"),
        ("101", "vmid"),
        ("999999999", "vmid"),
        ("wiki", "name"),
        ("Wiki-2.lan", "name"),
        ("web-*", "glob"),
        ("10?", "glob"),
    ],
)
def test_entry_kinds(text: str, kind: str) -> None:
    assert parse_guest_entry(text).kind == kind


def test_cluster_entry_is_parsed_once() -> None:
    entry = parse_guest_entry("other:200")
    assert (entry.cluster, entry.vmid, entry.bound) == ("other", 200, True)
    assert not parse_guest_entry("wiki").bound


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty entry"),
        (" wiki", "white space"),
        ("wi ki", "white space"),
        ("wiki\x00", "U+0000"),
        ("home:wiki", "not a guest ref"),
        ("home:pve1/101", "not a guest ref"),
        ("a:b:101", "not a guest ref"),
        ("home:*", "globs match names and vmids only"),
        ("pve1/*", "globs match names and vmids only"),
        ("/101", "not a guest ref"),
        ("99", "100..999999999"),
        ("0101", "without leading zeros"),
        ("1000000000", "100..999999999"),
        ("home:99", "100..999999999"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_malformed_entries_are_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_guest_entry(text)


def test_config_error_names_the_entry_key_path() -> None:
    lines = error_lines(
        MINIMAL
        + "api:\n  tokens:\n"
        + "    - {name: ops, secret: 0123456789abcdef, guests: ['*']}\n"
        + "    - {name: one, secret: 0123456789abcdef, guests: [101, 'home:wiki']}\n"
    )
    assert len(lines) == 1
    assert lines[0].startswith("api.tokens[1].guests[1]: 'home:wiki' is not a guest ref; use ")
    assert "cluster:vmid (home:101)" in lines[0]


def test_config_error_names_the_path_key_path() -> None:
    lines = error_lines(
        MINIMAL
        + "api:\n  tokens:\n"
        + "    - {name: logs, secret: 0123456789abcdef, paths: [/var/log, 'var/lib']}\n"
    )
    assert lines == ["api.tokens[0].paths[1]: 'var/lib' must be an absolute path like /var/log"]


# ------------------------------------------------------------------------- the matching rule


def test_a_name_in_two_clusters_allows_neither() -> None:
    allowlist = GuestAllowlist("t", ["wiki"])
    for guest in (HOME_WIKI, OTHER_WIKI):
        decision = allowlist.decide(guest, view(), CLUSTERS)
        assert not decision.allowed
        assert [str(u) for u in decision.unresolved] == [
            "ambiguous allowlist entry 'wiki' matches home:101, other:200"
        ]
        # The client is told the rule, not which guests the other clusters hold.
        assert "other:200" not in decision.unresolved[0].public
        assert "matches 2 guests" in decision.unresolved[0].public


def test_cluster_vmid_allows_exactly_that_guest() -> None:
    assert allowed(["other:200"], OTHER_WIKI)
    assert not allowed(["other:200"], HOME_WIKI)
    assert not allowed(["home:200"], OTHER_WIKI)  # home has no 200
    decision = GuestAllowlist("t", ["other:200"]).decide(HOME_WIKI, view(), CLUSTERS)
    assert decision.unresolved == ()  # not ambiguous, simply not listed


def test_unique_name_and_vmid_allow_their_guest() -> None:
    assert allowed(["db"], HOME_DB)
    assert allowed(["DB"], HOME_DB)  # names are case-insensitive, as in lookups
    assert allowed(["102"], HOME_DB)
    assert not allowed(["db"], HOME_WIKI)


def test_a_vmid_in_two_clusters_allows_neither() -> None:
    allowlist = GuestAllowlist("t", ["300"])
    for guest in (HOME_300, OTHER_300):
        decision = allowlist.decide(guest, view(), CLUSTERS)
        assert not decision.allowed
        assert str(decision.unresolved[0]) == (
            "ambiguous allowlist entry '300' matches home:300, other:300"
        )


def test_node_refs_must_be_unique_too() -> None:
    assert allowed(["pve1/101"], HOME_WIKI)
    assert allowed(["lxc/101"], HOME_WIKI)
    # Both clusters call their node pve1 and have a CT 101.
    twin = make_guest(101, "other-wiki", cluster="other", node="pve1")
    snapshot = view(other=[twin])
    for entry in ("pve1/101", "lxc/101"):
        assert not allowed([entry], HOME_WIKI, snapshot)
        assert not allowed([entry], twin, snapshot)
    assert allowed(["home:101"], HOME_WIKI, snapshot)


def test_glob_allows_only_while_it_matches_one_guest() -> None:
    assert allowed(["web-*"], HOME_WEB)
    second = make_guest(201, "web-2", cluster="other", node="pve2")
    snapshot = view(other=[*OTHER, second])
    assert not allowed(["web-*"], HOME_WEB, snapshot)
    assert not allowed(["web-*"], second, snapshot)
    assert not allowed(["10?"], HOME_WIKI)  # 101, 102, 103
    assert allowed(["20?"], OTHER_WIKI)  # only 200


def test_star_allows_everything() -> None:
    for guest in (*HOME, *OTHER):
        assert allowed(["*"], guest)


def test_an_ambiguous_entry_does_not_spoil_a_bound_one() -> None:
    assert allowed(["wiki", "other:200"], OTHER_WIKI)
    assert not allowed(["wiki", "other:200"], HOME_WIKI)


def test_a_rename_in_another_cluster_cannot_hijack_the_entry() -> None:
    allowlist = GuestAllowlist("t", ["wiki", "web-*"])
    before = view(other=[make_guest(200, "scratch", cluster="other", node="pve2")])
    assert allowlist.decide(HOME_WIKI, before, CLUSTERS).allowed
    assert allowlist.decide(HOME_WEB, before, CLUSTERS).allowed
    # Someone renames other:200 to wiki, other:201 to web-9: each entry now allows nothing.
    renamed = (OTHER_WIKI, make_guest(201, "web-9", cluster="other", node="pve2"))
    after = view(other=renamed)
    for guest in (HOME_WIKI, HOME_WEB, *renamed):
        assert not allowlist.decide(guest, after, CLUSTERS).allowed


def test_uniqueness_waits_for_every_cluster() -> None:
    # "other" has not been polled: its own wiki could be there. Bound entries still work.
    only_home = view(other=None)
    decision = GuestAllowlist("t", ["wiki"]).decide(HOME_WIKI, only_home, CLUSTERS)
    assert not decision.allowed
    assert "before cluster(s) other have been polled" in str(decision.unresolved[0])
    assert allowed(["home:101"], HOME_WIKI, only_home)
    never = Snapshot({**view().clusters, "other": ClusterSnapshot("other", (), (), ok=False)})
    assert not allowed(["wiki"], HOME_WIKI, never)
    # A cluster that is down now keeps its last good guests: still judged on them.
    down = Snapshot({**view().clusters, "other": view().clusters["other"].failed("timeout")})
    assert not allowed(["wiki"], HOME_WIKI, down)
    assert allowed(["db"], HOME_DB, down)


def test_principal_carries_the_parsed_allowlist() -> None:
    principal = Principal("ops", frozenset({"exec"}), ("wiki",))
    assert not principal.may_touch(HOME_WIKI, view(), CLUSTERS).allowed
    assert principal.may_touch(HOME_WIKI, view(other=()), CLUSTERS).allowed
    assert not principal.allowlist.all
    assert Principal("all", frozenset(), ("*",)).allowlist.all


# ---------------------------------------------------------------------------------- warning


def test_ambiguity_warning_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    allowlist = GuestAllowlist("ci", ["wiki"], clock=lambda: now[0], warn_interval_s=60)
    snapshot = view()
    with caplog.at_level(logging.WARNING, logger="pxproxy.api.allowlist"):
        for _ in range(500):
            assert not allowlist.decide(OTHER_WIKI, snapshot, CLUSTERS).allowed
        assert len(caplog.records) == 1
        message = caplog.records[0].getMessage()
        assert message.startswith(
            "token 'ci' refused on other:200: ambiguous allowlist entry 'wiki' matches "
            "home:101, other:200"
        )
        assert "use cluster:vmid" in message
        now[0] += 61
        allowlist.decide(OTHER_WIKI, snapshot, CLUSTERS)
        assert len(caplog.records) == 2
        assert "(499 more since the last warning)" in caplog.records[1].getMessage()
        # Refusals without ambiguity (the guest is simply not listed) warn nothing.
        allowlist.decide(HOME_DB, snapshot, CLUSTERS)
        assert len(caplog.records) == 2


def test_warning_memory_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    guests = [make_guest(1000 + i, "same", cluster="home", node="pve1") for i in range(600)]
    allowlist = GuestAllowlist("t", ["same"])
    snapshot = view(home=guests, other=())
    with caplog.at_level(logging.WARNING, logger="pxproxy.api.allowlist"):
        for guest in guests[:400]:
            allowlist.decide(guest, snapshot, CLUSTERS)
    assert len(caplog.records) == 400  # one message per refused guest
    assert len(allowlist._limiter._last) <= 256


# ------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("prefix", ["/var/log", "/var/log/", "/", "/srv/app data"])
def test_good_path_prefixes(prefix: str) -> None:
    assert check_path_prefix(prefix) == prefix


@pytest.mark.parametrize(
    ("prefix", "says"),
    [
        ("", "empty path"),
        ("var/log", "absolute"),
        ("/var//log", "'//'"),
        ("/var/log/..", "'..' segments"),
        ("/var/./log", "'..' segments"),
        ("/var/log/*", "not globs"),
        ("/var/log\n", "U+000A"),
    ],
)
def test_bad_path_prefixes(prefix: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        check_path_prefix(prefix)


@pytest.mark.parametrize(
    ("prefix", "path", "ok"),
    [
        ("/var/log", "/var/log/syslog", True),
        ("/var/log", "/var/log/nginx/access.log", True),
        ("/var/log", "/var/logs-secret", False),
        ("/var/log", "/var/log-x/y", False),
        ("/var/log", "/var/lo", False),
        ("/var/log", "/var", False),
        ("/var/log/", "/var/log/syslog", True),
        ("/var/log/", "/var/logs", False),
        ("/etc/hostname", "/etc/hostname", True),
        ("/etc/hostname", "/etc/hostname.bak", False),
        ("/", "/etc/shadow", True),
    ],
)
def test_path_prefixes_match_on_boundaries(prefix: str, path: str, ok: bool) -> None:
    allowed_prefixes = (check_path_prefix(prefix),)
    if ok:
        assert validate_path(path, "file", allowed_prefixes) == path
    else:
        with pytest.raises(ValidationError) as info:
            validate_path(path, "file", allowed_prefixes)
        assert info.value.rule == "path allowlist"


@pytest.mark.parametrize("path", ["/var/log/../../etc/shadow", "/var/log//x", "/var/log/./x"])
def test_paths_that_only_look_inside_are_refused(path: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_path(path, "file", ("/var/log",))
    assert info.value.rule == "path"
