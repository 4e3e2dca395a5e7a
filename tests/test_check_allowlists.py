"""`pxproxy check` on guest allowlists: warnings for entries a rename can make ambiguous when
several clusters are configured, problems for entries that already allow nothing."""

from __future__ import annotations

from pxproxy.check import check_allowlists
from pxproxy.config.models import Config

from .api.test_allowlist import HOME, view
from .builders import make_guest

SECRET = "0123456789abcdef"


def config(guests: list[object], clusters: tuple[str, ...] = ("home", "other")) -> Config:
    return Config.model_validate(
        {
            "proxmox": [
                {"name": name, "url": f"https://{name}.example:8006", "token_id": "a@pve!b",
                 "secret": "x"}
                for name in clusters
            ],
            "api": {"tokens": [{"name": "all", "secret": SECRET},
                               {"name": "t", "secret": SECRET, "guests": guests}]},
        }
    )  # fmt: skip


def test_bare_forms_warn_with_several_clusters() -> None:
    problems, warnings = check_allowlists(
        config(["*", "other:200", "db", 102, "web-*", "pve1/101", "nothing-here"]), view()
    )
    assert problems == []
    assert [w.split(":", 1)[0] for w in warnings] == [
        "api.tokens[1].guests[2]",
        "api.tokens[1].guests[3]",
        "api.tokens[1].guests[4]",
        "api.tokens[1].guests[5]",
        "api.tokens[1].guests[6]",
    ]
    assert warnings[0] == (
        "api.tokens[1].guests[2]: 'db' is a bare name: with 2 clusters it stops allowing "
        "anything once a second guest matches (a rename is enough); prefer cluster:vmid; "
        "it is home:102 now"
    )
    assert "'102' is a bare vmid" in warnings[1]
    assert "'web-*' is a glob" in warnings[2]
    assert "'pve1/101' is a node/vmid ref" in warnings[3]
    assert warnings[4].endswith("prefer cluster:vmid")  # matches nothing now: no suggestion


def test_one_cluster_does_not_warn() -> None:
    problems, warnings = check_allowlists(
        config(["db", "102", "web-*"], clusters=("home",)), view(other=None)
    )
    assert (problems, warnings) == ([], [])


def test_ambiguous_entries_and_unknown_clusters_are_problems() -> None:
    problems, warnings = check_allowlists(config(["wiki", "300", "nowhere:101", "10?"]), view())
    assert problems == [
        "api.tokens[1].guests[0]: 'wiki' matches 2 guests (home:101, other:200), so it allows "
        "none of them; use cluster:vmid",
        "api.tokens[1].guests[1]: '300' matches 2 guests (home:300, other:300), so it allows "
        "none of them; use cluster:vmid",
        "api.tokens[1].guests[2]: 'nowhere:101' names no configured cluster (home, other)",
        "api.tokens[1].guests[3]: '10?' matches 3 guests (home:101, home:102, home:103), so it "
        "allows none of them; use cluster:vmid",
    ]
    assert warnings == []
    # Within one cluster a glob over several guests allows none of them either.
    web2 = make_guest(104, "web-2", cluster="home", node="pve1")
    problems, _ = check_allowlists(
        config(["web-*"], clusters=("home",)), view(home=[*HOME, web2], other=None)
    )
    assert problems == [
        "api.tokens[1].guests[0]: 'web-*' matches 2 guests (home:103, home:104), so it allows "
        "none of them; use cluster:vmid"
    ]
