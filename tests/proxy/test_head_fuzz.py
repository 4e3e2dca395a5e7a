"""Hypothesis-driven request heads through one proxy to recording guests: valid lines mixed
with the hostile bytes of the smuggling corpus. Whatever comes, the proxy keeps serving, and
every answer is either a refusal that reached no guest, or the guest's own answer to exactly
one well-formed request forwarded once. A connection kept open after an answer still frames
the next request correctly: no leftover byte is taken for a request.

Refusals are 4xx, or 501/505 (a method or version the proxy does not serve), or a connection
closed without an answer (a head that never ends, cut by the header timeout).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pxproxy.proxy.authority import parse_host

from .conftest import StartProxy
from .raw_client import NoReply, RawClient, RawReply
from .raw_stack import H, Stack, get, start_stack
from .raw_upstream import OK_BODY, RawUpstream, RecordedRequest, recording_upstream

MAX_EXAMPLES = 300  # a few seconds here
REPLY_TIMEOUT_S = 4.0
HEADER_TIMEOUT = "1s"  # a head that never ends is cut this soon
REFUSAL_STATUSES = frozenset(range(400, 500)) | {501, 505}


@pytest.fixture
async def wiki() -> AsyncIterator[RawUpstream]:
    async with recording_upstream() as up:
        yield up


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    async with recording_upstream() as up:
        yield up


@pytest.fixture
async def stack(start_proxy: StartProxy, wiki: RawUpstream, raw: RawUpstream) -> Stack:
    return await start_stack(start_proxy, wiki, raw, header_timeout=HEADER_TIMEOUT)


@pytest.fixture
def ledger(stack: Stack) -> Ledger:
    return Ledger(stack)


# ------------------------------------------------------------------ what is generated


@dataclass(frozen=True)
class Fuzzed:
    data: bytes
    method: bytes


@dataclass(frozen=True)
class Pieces:
    """What one part of a request may be: valid choices, and hostile ones."""

    common: list[bytes]
    rare: list[bytes]


def _weighted(common: list[bytes], rare: list[bytes]) -> Pieces:
    return Pieces(common, rare)


def pick(draw: st.DrawFn, pieces: Pieces, hostility: int) -> bytes:
    """A hostile choice with `hostility` percent chance, else a valid one."""
    hostile = hostility > 0 and draw(st.integers(0, 99)) < hostility
    return draw(st.sampled_from(pieces.rare if hostile else pieces.common))


HOSTILE_BYTES = list(b' \t\r\n\x00\x0b\x7f\xff@:[]%#,;"\\/')
_hostile_text = st.lists(
    st.sampled_from([bytes([b]) for b in HOSTILE_BYTES] + [b"a", b"wiki", b".", b"t.test"]),
    max_size=6,
).map(b"".join)

METHODS = _weighted(
    [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"],
    [b"CONNECT", b"TRACE", b"get", b"G\x00T", b"", b"GET GET", b"PRI", b"BREW"],
)
TARGETS = _weighted(
    [b"/", b"/a?b=c", b"/p%20q", b"//x", b"http://wiki.t.test/abs", b"http://a.wild.t.test"],
    [
        b"*",
        b"http://raw.t.test/",
        b"http://u:p@wiki.t.test/",
        b"http://wiki.t.test@raw.t.test/",
        b"HTTP://WIKI.T.TEST./",
        b"wiki.t.test:80",
        b"ftp://wiki.t.test/",
        b"/a#b",
        b"/a b",
        b"/\x00",
        b"/\xff",
        b"",
    ],
)
VERSIONS = _weighted(
    [b"HTTP/1.1", b"HTTP/1.0"],
    [b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/1.10", b"HTTP/1.1 ", b"HTTP/1", b""],
)
EOLS = _weighted([b"\r\n"], [b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\n\r"])
SEPARATORS = _weighted([b": ", b":"], [b":  ", b" : ", b":\t", b" :", b"::", b""])
HOSTS = _weighted(
    [b"wiki.t.test", b"WIKI.t.test.", b"wiki.t.test:8080", b"a.wild.t.test", b"nope.t.test"],
    [
        b"raw.t.test:80@wiki.t.test",
        b"wiki.t.test:abc",
        b"wiki.t.test..",
        b"[wiki.t.test]",
        b".wild.t.test",
        b"x..wild.t.test",
        b"wiki.t.test:",
        b"[::1]",
        b"",
        b"raw.t.test",
    ],
)
# Every Content-Length here means "no body" (or is invalid): a valid one never makes the
# proxy wait for bytes that are not coming.
LENGTHS = _weighted([b"0"], [b"00", b"+0", b"-0", b"0, 0", b"0x0", b"", b"0 0", b"\t0", b"0 "])
CODINGS = _weighted(
    [b"chunked"],
    [
        b"identity",
        b"gzip",
        b"chunked, identity",
        b"gzip, chunked",
        b"xchunked",
        b"chunked, chunked",
    ],
)
CHUNKED_BODIES = _weighted(
    [b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"],
    [b"0x0\r\n\r\n", b"zz\r\n\r\n", b"5\r\nhelloX\r\n0\r\n\r\n", b"-1\r\n\r\n", b"0\n\n"],
)
OTHER_NAMES = _weighted(
    [b"X-A", b"Accept", b"Cookie", b"User-Agent", b"Connection"],
    [b"", b"X A", b"X\x00A", b"X:A", b"\xffX", b"Host ", b" Host", b"Content-Length\t"],
)


OTHER_VALUES = _weighted([b"1", b"close", b"keep-alive", b"a=b", b"caf\xe9"], [])


def field(draw: st.DrawFn, hostility: int) -> tuple[bytes, bytes]:
    """(a header line without its line ending, the bytes that end it)."""
    # Clean requests keep to one Host and no framing headers here (requests() may add one).
    kinds = ["other", "other", "other", "host", "length", "coding"] if hostility else ["other"]
    kind = draw(st.sampled_from(kinds))
    if kind == "host":
        name, value = (
            draw(st.sampled_from([b"Host", b"host", b"HOST"])),
            pick(draw, HOSTS, hostility),
        )
    elif kind == "length":
        name, value = b"Content-Length", pick(draw, LENGTHS, hostility)
    elif kind == "coding":
        name = draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]))
        value = pick(draw, CODINGS, hostility)
    else:
        name = pick(draw, OTHER_NAMES, hostility)
        hostile_value = hostility > 0 and draw(st.integers(0, 99)) < hostility
        value = draw(_hostile_text) if hostile_value else pick(draw, OTHER_VALUES, 0)
    return name + pick(draw, SEPARATORS, hostility) + value, pick(draw, EOLS, hostility)


@st.composite
def requests(draw: st.DrawFn) -> Fuzzed:
    # Per request, how likely each part is hostile: none, a few, or half of them.
    hostility = draw(st.sampled_from([0, 0, 0, 5, 15, 50]))
    method = pick(draw, METHODS, hostility)
    target, version = pick(draw, TARGETS, hostility), pick(draw, VERSIONS, hostility)
    line = method + b" " + target + b" " + version + pick(draw, EOLS, hostility)
    lines = [field(draw, hostility) for _ in range(draw(st.integers(0, 6)))]
    if draw(st.integers(0, 9)) < 8:  # mostly one proper Host somewhere
        lines.insert(draw(st.integers(0, len(lines))), (H, b"\r\n"))
    framing = draw(st.sampled_from([b"", b"", b"Content-Length: 0", b"Transfer-Encoding: chunked"]))
    if framing:
        lines.insert(draw(st.integers(0, len(lines))), (framing, b"\r\n"))
    data = line + b"".join(text + eol for text, eol in lines) + b"\r\n"
    if any(text.lower().startswith(b"transfer-encoding") for text, _ in lines):
        # Should the proxy read a chunked body; a bad one after a good head, often.
        data += pick(draw, CHUNKED_BODIES, max(hostility, 30))
    return Fuzzed(data, method)


# ------------------------------------------------------------------ the property


class Ledger:
    """Which requests the guests got since the last look (per connection, so requests that
    go over an older pooled connection are not missed), with the guest that got each."""

    def __init__(self, stack: Stack) -> None:
        self._guests = {"wiki": stack.wiki, "raw": stack.raw}
        self._seen: dict[int, int] = {}

    def new(self) -> list[tuple[str, RecordedRequest]]:
        found: list[tuple[str, RecordedRequest]] = []
        for guest, up in self._guests.items():
            for conn in up.connections:
                requests = conn.requests()  # MalformedRecording: not well-formed
                found += [(guest, r) for r in requests[self._seen.get(id(conn), 0) :]]
                self._seen[id(conn)] = len(requests)
        return found


def routed_to(host: str) -> str | None:
    """The guest a Host header names (raw_stack's routes), None for no route."""
    name = parse_host(host).host
    if name == "wiki.t.test" or name.endswith(".wild.t.test"):
        return "wiki"
    return "raw" if name == "raw.t.test" else None


async def _next_reply(client: RawClient) -> RawReply | None:
    """The next response, or None when the proxy closed (or went quiet) without one."""
    try:
        return await client.reply(REPLY_TIMEOUT_S)
    except NoReply:
        return None


_counter = itertools.count()


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # One proxy and its guests serve every example: that is the point (no restart hides a
    # crash), and the ledger tells each example's requests apart.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=requests())
async def test_every_head_is_refused_or_forwarded_once(
    stack: Stack, ledger: Ledger, case: Fuzzed
) -> None:
    sentinel = f"/sentinel-{next(_counter)}"
    client = await RawClient.connect(stack.port)
    try:
        await client.send(case.data)
        reply = await _next_reply(client)
        if reply is None:
            assert client.eof, ("no answer, and the connection left open", case.data)
        forwarded = reply is not None and reply.value("X-Raw-Upstream") == "1"
        event("forwarded" if forwarded else f"refused: {reply.status if reply else 'closed'}")
        if reply is not None and not forwarded:
            assert reply.status in REFUSAL_STATUSES, (reply, case.data)
        closing = reply is None or client.eof or reply.value("Connection") == "close"
        if not closing:
            # Still open: the next request on it must be framed as sent, with no byte of the
            # case left over and taken for a request.
            await client.send(get(H, target=sentinel.encode()))
            after = await _next_reply(client)
            assert after is None or (after.status, after.body) == (200, OK_BODY), (
                after,
                case.data,
            )
    finally:
        await client.close()
    # A sentinel on a new connection: the proxy still serves, and whatever the case made it
    # send the guests has arrived by the time this is answered.
    check = await _exchange_sentinel(stack, sentinel + "-new")
    assert (check.status, check.body) == (200, OK_BODY), case.data
    got = ledger.new()
    others = [(guest, r) for guest, r in got if not r.target.startswith(sentinel)]
    if forwarded:
        assert reply is not None
        assert (reply.status, reply.body) == (200, OK_BODY)
        assert len(others) == 1, (others, case.data)
        ((guest, request),) = others
        assert request.method.encode() == case.method
        # Routed and forwarded by one authority: the Host it got names the guest it reached.
        host = request.value("Host")
        assert host is not None
        assert routed_to(host) == guest, (host, guest, case.data)
    else:
        assert others == [], (reply, others, case.data)


async def _exchange_sentinel(stack: Stack, target: str) -> RawReply:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(get(H, target=target.encode()))
        return await client.reply()
    finally:
        await client.close()
