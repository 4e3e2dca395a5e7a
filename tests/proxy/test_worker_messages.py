"""The daemon-worker protocol (proxy/worker_messages.py): what is encoded decodes to the same
thing, and whatever else arrives on a line is a MessageError, never another exception."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproxy.config.models import ProxyConfig, RouteConfig
from pxproxy.proxy import worker_messages as msg
from pxproxy.proxy.stats import UPSTREAM_BUCKETS, ProxyStats
from pxproxy.proxy.upstream import Upstream

BUCKETS = len(UPSTREAM_BUCKETS) + 1

ROUTES = (
    RouteConfig.model_validate(
        {
            "host": ["wiki.test", "wiki.alt.test"],
            "guest": "wiki",
            "port": 8080,
            "idle": {"timeout": "10m", "wake_timeout": "30s"},
        }
    ),
    RouteConfig.model_validate(
        {"host": "*.blog.test", "guest": "lab:7282", "port": 443, "scheme": "https"}
    ),
    RouteConfig.model_validate(
        {"host": "api.test", "guest": "api", "port": 9000, "path_prefix": "/v1"}
    ),
    RouteConfig.model_validate({"listen": "127.0.0.1:7283", "guest": "game", "port": 25565}),
)


def decoded(line: bytes) -> dict[str, Any]:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    return msg.decode(line)


def worker_config(**overrides: Any) -> msg.WorkerConfig:
    values: dict[str, Any] = {
        "proxy": ProxyConfig.model_validate(
            {"trusted_proxies": ["10.0.0.0/8"], "read_timeout": "1m", "workers": 4}
        ),
        "routes": ROUTES,
        "listen": ("0.0.0.0", 8443),
        "relay": ("127.0.0.1", 40123),
        "secret": "s3cr3t",
        "tls_generation": 3,
        "log_level": "debug",
    }
    values.update(overrides)
    return msg.WorkerConfig(**values)


# ---------------------------------------------------------------------- round trips


def test_config_round_trips_with_every_route_kind() -> None:
    config = worker_config()
    message = decoded(msg.encode_config(config))
    assert message["kind"] == "config"
    back = msg.config_of(message)
    assert back == config
    assert back.proxy.tls is None
    assert back.routes[0].idle is not None
    assert back.routes[0].idle.timeout == 600.0
    assert back.routes[1].host == ("*.blog.test",)
    assert back.routes[2].path_prefix == "/v1"
    assert back.routes[3].host is None
    assert back.routes[3].listen is not None


def test_config_round_trips_without_a_listener() -> None:
    config = worker_config(listen=None, tls_generation=0, routes=())
    assert msg.config_of(decoded(msg.encode_config(config))) == config


def test_config_keeps_what_was_set_only() -> None:
    # exclude_unset: a route's defaults are the worker's to fill, so the same config
    # compares equal on both sides (Routing.configure compares route sets).
    raw = decoded(msg.encode_config(worker_config()))["routes"][2]
    assert raw == {"host": ["api.test"], "guest": "api", "port": 9000, "path_prefix": "/v1"}


def test_ready_round_trips_direct_none_and_ipv6() -> None:
    ready: msg.Readiness = (
        msg.Direct(Upstream("lab:7281", "wiki", "127.10.28.113", 8080, "http"), True),
        None,
        msg.Direct(Upstream("lab:7282", "blog", "[fd00::7282]", 443, "https"), False),
        None,
    )
    message = decoded(msg.encode_ready(ready))
    assert message["kind"] == "ready"
    back = msg.ready_of(message, 4)
    assert back == ready
    direct = back[2]
    assert direct is not None
    assert direct.upstream.address == "fd00::7282"
    assert [d.watched if d else None for d in back] == [True, None, False, None]


def test_ready_of_nothing() -> None:
    assert msg.ready_of(decoded(msg.encode_ready(())), 0) == ()


def test_report_round_trips_counters() -> None:
    stats = ProxyStats()
    stats.request("wiki.test", 200, 0.003)
    stats.request("wiki.test", 200, 0.2)
    stats.request("wiki.test", 502, None)
    stats.request("*.blog.test", 404, 30.0)  # past the last bound: the +Inf bucket
    stats.connection_opened("wiki.test")
    stats.connection_opened("wiki.test")
    report = msg.Report({"wiki.test": 3, "*.blog.test": 1}, {"wiki.test": 2, "gone": 0}, stats)
    message = decoded(msg.encode_report(report))
    assert message["kind"] == "report"
    back = msg.report_of(message)
    assert back.activity == {"wiki.test": 3, "*.blog.test": 1}
    assert back.holds == {"wiki.test": 2, "gone": 0}
    assert set(back.stats.routes) == {"wiki.test", "*.blog.test"}
    wiki = back.stats.routes["wiki.test"]
    assert wiki.by_status == {200: 2, 502: 1}
    assert wiki.upstream_count == 2
    assert wiki.upstream_sum == pytest.approx(0.203)
    assert wiki.buckets == stats.routes["wiki.test"].buckets
    assert sum(wiki.buckets) == 2
    assert wiki.open == 2
    blog = back.stats.routes["*.blog.test"]
    assert blog.buckets[-1] == 1
    assert sum(blog.buckets) == 1
    assert blog.by_status == {404: 1}
    assert blog.open == 0


def test_drain_and_listening_lines() -> None:
    assert decoded(msg.encode_drain(2.5)) == {"kind": "drain", "grace": 2.5}
    assert decoded(msg.encode_listening(8443)) == {"kind": "listening", "port": 8443}
    assert decoded(msg.encode_listening(None)) == {"kind": "listening", "port": None}
    assert decoded(msg.encode_listening(None, "cannot listen")) == {
        "kind": "failed",
        "error": "cannot listen",
    }


# ---------------------------------------------------------------------- malformed lines


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b"", "not JSON"),
        (b"{kind: config}\n", "not JSON"),
        (b"\xff\xfe{}\n", "not JSON"),
        (b"[1, 2]\n", "not a message object"),
        (b'"config"\n', "not a message object"),
        (b"null\n", "not a message object"),
        (b'{"routes": []}\n', "not a message object"),
        (b'{"kind": 7}\n', "not a message object"),
    ],
)
def test_decode_refuses(line: bytes, says: str) -> None:
    with pytest.raises(msg.MessageError, match=says):
        msg.decode(line)


def test_decode_refuses_a_deeply_nested_line() -> None:
    # json's recursion limit: a RecursionError would escape both readers' except clauses.
    with pytest.raises(msg.MessageError):
        msg.decode(b'{"kind": "report", "stats": ' + b"[" * 100_000 + b"\n")


def good_config() -> dict[str, Any]:
    return decoded(msg.encode_config(worker_config()))


@pytest.mark.parametrize(
    "change",
    [
        {"proxy": None},
        {"proxy": {"read_timeout": "soon"}},
        {"proxy": {"no_such_setting": 1}},
        {"routes": None},
        {"routes": [{"host": "a.test"}]},  # no guest, no port
        {"routes": [7]},
        {"listen": ["0.0.0.0"]},
        {"listen": ["0.0.0.0", "http"]},
        {"listen": 8443},
        {"relay": None},
        {"relay": []},
        {"tls_generation": "new"},
        {"tls_generation": None},
    ],
)
def test_config_of_refuses(change: dict[str, Any]) -> None:
    message = {**good_config(), **change}
    with pytest.raises(msg.MessageError, match="invalid config message"):
        msg.config_of(message)


@pytest.mark.parametrize("missing", ["proxy", "routes", "listen", "relay", "secret"])
def test_config_of_refuses_a_missing_field(missing: str) -> None:
    message = good_config()
    del message[missing]
    with pytest.raises(msg.MessageError, match=missing):
        msg.config_of(message)


def test_config_of_refuses_an_infinite_generation() -> None:
    # json.loads takes `Infinity`; int() of it is an OverflowError, not a ValueError.
    message = json.loads(msg.encode_config(worker_config()).replace(b":3,", b":Infinity,"))
    assert message["tls_generation"] == float("inf")
    with pytest.raises(msg.MessageError):
        msg.config_of(message)


GOOD_ENTRY = ["lab:7281", "wiki", "127.10.28.113", 8080, "http", True]


def test_ready_of_refuses_the_wrong_route_count() -> None:
    message = {"kind": "ready", "routes": [None, GOOD_ENTRY, None]}
    with pytest.raises(msg.MessageError, match="ready for 3 routes, the config has 2"):
        msg.ready_of(message, 2)
    with pytest.raises(msg.MessageError, match="ready for 3 routes, the config has 4"):
        msg.ready_of(message, 4)


@pytest.mark.parametrize(
    "entry",
    [
        GOOD_ENTRY[:5],  # no watched flag
        [*GOOD_ENTRY, "extra"],
        [],
        7,
        True,
        {"guest": "lab:7281"},
        ["lab:7281", "wiki", "127.10.28.113", "eighty", "http", True],
        ["lab:7281", "wiki", "127.10.28.113", None, "http", True],
    ],
)
def test_ready_of_refuses_an_entry_of_the_wrong_shape(entry: Any) -> None:
    with pytest.raises(msg.MessageError, match="invalid ready message"):
        msg.ready_of({"kind": "ready", "routes": [entry]}, 1)


@pytest.mark.parametrize(
    "entry",
    [
        "123456",  # six characters unpack into six fields: no string passes for an upstream
        "abcdef",
        ["lab:7281", "wiki", "127.10.28.113", math.inf, "http", True],  # OverflowError
        ["lab:7281", "wiki", "127.10.28.113", 8080, "http", "false"],  # not a bool: no guess
        ["lab:7281", "wiki", "127.10.28.113", 0, "http", True],
        ["lab:7281", "wiki", "127.10.28.113", 70000, "http", True],
        ["lab:7281", "wiki", "127.10.28.113", 80.5, "http", True],
    ],
)
def test_ready_of_refuses_entries_that_unpack_by_accident(entry: Any) -> None:
    with pytest.raises(msg.MessageError):
        msg.ready_of({"kind": "ready", "routes": [entry]}, 1)


@pytest.mark.parametrize("routes", [None, 7, {"a": 1}])
def test_ready_of_refuses_routes_that_are_not_a_list(routes: Any) -> None:
    with pytest.raises(msg.MessageError):
        msg.ready_of({"kind": "ready", "routes": routes}, 1)


def test_ready_of_refuses_no_routes_field() -> None:
    with pytest.raises(msg.MessageError, match="invalid ready message"):
        msg.ready_of({"kind": "ready"}, 0)


def route_stats(**change: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "status": {"200": 1},
        "buckets": [0] * BUCKETS,
        "count": 0,
        "sum": 0.0,
        "open": 0,
    }
    raw.update(change)
    return raw


def report(**change: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "kind": "report",
        "activity": {"wiki.test": 1},
        "holds": {},
        "stats": {"wiki.test": route_stats()},
    }
    message.update(change)
    return message


def test_report_of_takes_the_good_one() -> None:
    assert msg.report_of(report()).stats.routes["wiki.test"].by_status == {200: 1}


@pytest.mark.parametrize("buckets", [[], [0] * (BUCKETS - 1), [0] * (BUCKETS + 1)])
def test_report_of_refuses_the_wrong_bucket_count(buckets: list[int]) -> None:
    with pytest.raises(msg.MessageError, match="wrong number of histogram buckets"):
        msg.report_of(report(stats={"wiki.test": route_stats(buckets=buckets)}))


@pytest.mark.parametrize(
    "change",
    [
        {"activity": None},
        {"activity": [1]},
        {"activity": {"wiki.test": "many"}},
        {"holds": "none"},
        {"holds": {"wiki.test": None}},
        {"stats": []},
        {"stats": {"wiki.test": None}},
        {"stats": {"wiki.test": [1, 2]}},
        {"stats": {"wiki.test": route_stats(status=[200])}},
        {"stats": {"wiki.test": route_stats(status={"ok": 1})}},
        {"stats": {"wiki.test": route_stats(buckets=None)}},
        {"stats": {"wiki.test": route_stats(buckets=["a"] * BUCKETS)}},
        {"stats": {"wiki.test": route_stats(count="x")}},
        {"stats": {"wiki.test": route_stats(sum=None)}},
        {"stats": {"wiki.test": route_stats(open={})}},
        {"stats": {"wiki.test": {"status": {}}}},
    ],
)
def test_report_of_refuses_wrong_types(change: dict[str, Any]) -> None:
    with pytest.raises(msg.MessageError, match="invalid report"):
        msg.report_of(report(**change))


@pytest.mark.parametrize("missing", ["activity", "holds", "stats"])
def test_report_of_refuses_a_missing_field(missing: str) -> None:
    message = report()
    del message[missing]
    with pytest.raises(msg.MessageError, match=missing):
        msg.report_of(message)


@pytest.mark.parametrize(
    "change",
    [
        {"activity": {"wiki.test": float("inf")}},
        {"holds": {"wiki.test": float("-inf")}},
        {"stats": {"wiki.test": route_stats(sum=10**400)}},  # too large for a float
    ],
)
def test_report_of_refuses_numbers_out_of_range(change: dict[str, Any]) -> None:
    # Both parse from a JSON line (`Infinity`, a long integer); int()/float() of them raise
    # OverflowError, which is not a ValueError.
    with pytest.raises(msg.MessageError):
        msg.report_of(report(**change))


# ---------------------------------------------------------------------- fuzz

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats()
    # json.loads makes these from NaN and Infinity; drawn on their own, or they are rare.
    | st.sampled_from([math.inf, -math.inf, math.nan])
    | st.text(max_size=8)
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=15,
)
KEYS = st.sampled_from(
    [
        "kind",
        "proxy",
        "routes",
        "listen",
        "relay",
        "secret",
        "tls_generation",
        "log_level",
        "activity",
        "holds",
        "stats",
        "status",
        "buckets",
        "count",
        "sum",
        "open",
    ]
)
# Messages with the right keys and arbitrary values reach further than arbitrary keys.
MESSAGES = st.dictionaries(KEYS | st.text(max_size=6), JSON, max_size=6)
STATS = st.dictionaries(
    st.text(max_size=6),
    st.fixed_dictionaries(
        {},
        optional={
            "status": st.dictionaries(st.text(max_size=4), JSON, max_size=3) | JSON,
            "buckets": st.lists(JSON_SCALARS, min_size=BUCKETS, max_size=BUCKETS) | JSON,
            "count": JSON_SCALARS,
            "sum": JSON_SCALARS,
            "open": JSON_SCALARS,
        },
    )
    | JSON,
    max_size=3,
)
# Every field present and mostly of the right type: each one's values are reached.
REPORTS = st.fixed_dictionaries(
    {
        "activity": st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3) | JSON,
        "holds": st.dictionaries(st.text(max_size=4), JSON_SCALARS, max_size=3) | JSON,
        "stats": STATS,
    }
)
ENTRIES = st.lists(
    st.none()
    | st.lists(JSON_SCALARS, min_size=6, max_size=6)
    | st.tuples(
        st.text(max_size=4),
        st.text(max_size=4),
        st.text(max_size=4),
        JSON_SCALARS,
        st.text(max_size=4),
        JSON_SCALARS,
    ).map(list)
    | JSON,
    max_size=4,
)


def only_message_errors(call: Any, *args: Any) -> None:
    with contextlib.suppress(msg.MessageError):
        call(*args)


@settings(max_examples=150, deadline=None)
@given(MESSAGES)
def test_fuzz_config_of_raises_only_message_errors(message: dict[str, Any]) -> None:
    only_message_errors(msg.config_of, message)


CONFIG_FIELDS = ("listen", "relay", "secret", "tls_generation", "log_level")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(CONFIG_FIELDS), JSON_SCALARS | JSON, max_size=3))
def test_fuzz_config_fields_raise_only_message_errors(change: dict[str, Any]) -> None:
    # A valid config with a few fields replaced: the proxy and routes pass, the rest is tried.
    only_message_errors(msg.config_of, {**good_config(), **change})


@settings(max_examples=150, deadline=None)
@given(MESSAGES, st.integers(0, 4))
def test_fuzz_ready_of_raises_only_message_errors(message: dict[str, Any], count: int) -> None:
    only_message_errors(msg.ready_of, message, count)


@settings(max_examples=400, deadline=None)
@given(ENTRIES)
def test_fuzz_ready_entries_raise_only_message_errors(entries: list[Any]) -> None:
    # The count matches, so every entry is looked at.
    only_message_errors(msg.ready_of, {"kind": "ready", "routes": entries}, len(entries))


@settings(max_examples=400, deadline=None)
@given(REPORTS)
def test_fuzz_report_of_raises_only_message_errors(message: dict[str, Any]) -> None:
    only_message_errors(msg.report_of, message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
def test_fuzz_decode_raises_only_message_errors(line: bytes) -> None:
    try:
        message = msg.decode(line)
    except msg.MessageError:
        return
    assert isinstance(message, dict)
    assert isinstance(message["kind"], str)
