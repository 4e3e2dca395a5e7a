"""The smuggling corpus: hostile request heads and bodies sent byte for byte through the proxy
to guests that record exactly what they receive (raw_upstream.py).

For every case the guest sees either nothing, or exactly one well-formed request framed as
the proxy understood it, and re-framed by the proxy (never the client's framing passed on).
A refused request gets its status (400, 405, 431) and the connection closed. After each case a
sentinel request on a new connection proves the proxy still serves, and bounds what the guest
could have been sent before it (nothing more arrives once the sentinel has been answered).

The guests answer ambiguous framing of their own too: that is a 502, and the connection it
came on is never used again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pxproxy.proxy.exchange import CHUNKED_HOLD_BYTES

from ..support import wait_for
from .conftest import StartProxy
from .raw_client import NoReply, RawClient, RawReply, exchange
from .raw_stack import H, Stack, get, head, start_stack
from .raw_upstream import (
    OK_BODY,
    SWITCHING_REPLY,
    MalformedRecording,
    RawUpstream,
    RecordedRequest,
    recording_upstream,
)

MAX_HEADERS = 20
MAX_HEAD_BYTES = 2048
SENTINEL = "/sentinel"


@pytest.fixture
async def wiki() -> AsyncIterator[RawUpstream]:
    """The guest behind wiki.t.test and *.wild.t.test."""
    async with recording_upstream() as up:
        yield up


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    """The guest behind raw.t.test: the route a confused Host would reach instead."""
    async with recording_upstream() as up:
        yield up


@pytest.fixture
async def stack(start_proxy: StartProxy, wiki: RawUpstream, raw: RawUpstream) -> Stack:
    return await start_stack(
        start_proxy, wiki, raw, max_headers=MAX_HEADERS, max_header_size=MAX_HEAD_BYTES
    )


TE = b"Transfer-Encoding: chunked"
CL5 = b"Content-Length: 5"
CHUNKED_EMPTY = b"0\r\n\r\n"
CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"


def post(*fields: bytes, target: bytes = b"/") -> bytes:
    """A POST to wiki.t.test with these header lines after Host."""
    return head(b"POST " + target + b" HTTP/1.1", H, *fields)


def chunked(body: bytes) -> bytes:
    """A chunked POST to wiki.t.test whose body bytes are `body`."""
    return post(TE) + body


async def after_sentinel(stack: Stack) -> list[RecordedRequest]:
    """What the wiki guest got besides a sentinel request sent now on a new connection; once
    that is answered, nothing sent before it can still be on its way (raw gets nothing)."""
    reply = await exchange(stack.port, get(H, target=SENTINEL.encode()))
    assert (reply.status, reply.body) == (200, OK_BODY)
    requests = stack.wiki.requests()  # MalformedRecording if any is not whole and well-formed
    assert [r.target for r in requests].count(SENTINEL) == 1
    assert stack.raw.connections == [], stack.raw.received()
    return [r for r in requests if r.target != SENTINEL]


# ------------------------------------------------------------------ refused requests


def refused(name: str, data: bytes, status: int = 400) -> object:
    return pytest.param(data, status, id=name)


HOSTILE_HOSTS = [
    b"raw.t.test:80@wiki.t.test",
    b"wiki.t.test:80@raw.t.test",
    b"wiki.t.test:abc",
    b"wiki.t.test:",
    b"wiki.t.test:99999",
    b"wiki.t.test..",
    b"[wiki.t.test]",
    b".wild.t.test",
    b"x..wild.t.test",
    b"wiki.t.test,raw.t.test",
    b"wiki.t.test/raw",
    b"wiki%2et.test",
    b"wiki.t.test raw.t.test",
]

REFUSED = [
    # Content-Length and Transfer-Encoding together, both orders
    refused("cl-te", post(CL5, TE) + CHUNKED_EMPTY),
    refused("te-cl", post(TE, CL5) + CHUNKED_EMPTY),
    refused("cl0-te", post(b"Content-Length: 0", TE) + CHUNKED_HELLO),
    # Content-Length repeated, listed, signed, hex, empty
    refused("cl-twice-equal", post(CL5, CL5) + b"hello"),
    refused("cl-twice-different", post(CL5, b"Content-Length: 6") + b"hello!"),
    refused("cl-list", post(b"Content-Length: 1, 1") + b"a"),
    refused("cl-plus", post(b"Content-Length: +5") + b"hello"),
    refused("cl-minus", post(b"Content-Length: -1")),
    refused("cl-hex", post(b"Content-Length: 0x5") + b"hello"),
    refused("cl-inner-space", post(b"Content-Length: 1 2") + b"a" * 12),
    refused("cl-empty", post(b"Content-Length:")),
    # any Transfer-Encoding but one final chunked
    refused("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity") + CHUNKED_EMPTY),
    refused("te-identity", post(b"Transfer-Encoding: identity") + b"hello"),
    refused("te-gzip", post(b"Transfer-Encoding: gzip") + b"hello"),
    # chunked last, but a coding before it the proxy cannot undo: not forwarded either
    refused("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked") + CHUNKED_EMPTY),
    refused("te-twice", post(TE, TE) + CHUNKED_EMPTY),
    refused("te-chunked-chunked", post(b"Transfer-Encoding: chunked, chunked") + CHUNKED_EMPTY),
    refused("te-xchunked", post(b"Transfer-Encoding: xchunked") + CHUNKED_EMPTY),
    refused("te-chunkedx", post(b"Transfer-Encoding: chunkedx") + CHUNKED_EMPTY),
    refused("te-empty", post(b"Transfer-Encoding:") + CHUNKED_EMPTY),
    refused("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked") + CHUNKED_EMPTY),
    refused("te-http10", head(b"POST / HTTP/1.0", H, TE) + CHUNKED_HELLO),
    # a header line that starts with whitespace: obs-fold, Transfer-Encoding's too
    refused("te-leading-space", post(b" " + TE) + CHUNKED_EMPTY),
    refused("te-leading-tab", post(b"\t" + TE) + CHUNKED_EMPTY),
    refused("obs-fold", get(H, b"X-A: one", b" two")),
    refused("obs-fold-tab", get(H, b"X-A: one", b"\ttwo")),
    refused("obs-fold-host", get(b"Host: raw.t.test", b" wiki.t.test")),
    # line endings
    refused("bare-lf-request-line", b"GET / HTTP/1.1\nHost: wiki.t.test\r\n\r\n"),
    refused("bare-lf-header", b"GET / HTTP/1.1\r\nHost: wiki.t.test\nX-A: b\r\n\r\n"),
    refused("bare-lf-end", b"GET / HTTP/1.1\r\nHost: wiki.t.test\r\n\n"),
    refused("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: wiki.t.test\n\n"),
    refused("bare-cr", b"GET / HTTP/1.1\r\nHost: wiki.t.test\r\nX-A: a\rb\r\n\r\n"),
    # whitespace before the colon
    refused("space-before-colon", get(H, b"X-A : b")),
    refused("te-space-before-colon", post(b"Transfer-Encoding : chunked") + CHUNKED_EMPTY),
    refused("host-space-before-colon", get(b"Host : wiki.t.test")),
    refused("cl-tab-before-colon", post(b"Content-Length\t: 5") + b"hello"),
    # NUL, CR, LF (and DEL) inside a header line
    refused("nul-in-value", get(H, b"X-A: a\x00b")),
    refused("cr-in-value", get(H, b"X-A: a\rX-B: b")),
    refused("lf-in-value", get(H, b"X-A: a\nX-B: b")),
    refused("del-in-value", get(H, b"X-A: a\x7fb")),
    refused("nul-in-name", get(H, b"X\x00A: b")),
    # chunk sizes, chunk extensions, chunk data
    refused("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-space-semicolon", chunked(b"5 ;\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-trailing-space", chunked(b"5 \r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-negative", chunked(b"-5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-plus", chunked(b"+5\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-overflow", chunked(b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-size-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n")),
    refused("chunk-ext-open-quote", chunked(b'5;a="b\r\nhello\r\n0\r\n\r\n')),
    refused("chunk-ext-nul", chunked(b"5;\x00\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-ext-bare-lf", chunked(b"5;a\nhello\r\n0\r\n\r\n")),
    refused("chunk-data-without-crlf", chunked(b"5\r\nhelloX0\r\n\r\n")),
    refused("chunk-data-longer-than-size", chunked(b"3\r\nhello\r\n0\r\n\r\n")),
    refused("chunk-data-bare-lf", chunked(b"5\r\nhello\n0\r\n\r\n")),
    # Host: exactly one, valid, and the same as an absolute-form target's authority
    refused("host-twice-equal", get(H, H)),
    refused("host-twice-different", get(H, b"Host: raw.t.test")),
    refused("no-host-http11", get()),
    refused("host-empty", get(b"Host:")),
    refused("absolute-form-other-host", get(H, target=b"http://raw.t.test/")),
    refused("absolute-form-other-port", get(H, target=b"http://wiki.t.test:8080/")),
    refused("absolute-form-userinfo-trick", get(H, target=b"http://wiki.t.test@raw.t.test/")),
    refused("absolute-form-bad-host", get(H, target=b"http://wiki.t.test../")),
    refused("absolute-form-ftp", get(H, target=b"ftp://wiki.t.test/")),
    refused("fragment-in-target", get(H, target=b"/a#b")),
    refused("asterisk-form-get", get(H, target=b"*")),
    refused("authority-form-get", get(H, target=b"wiki.t.test:80")),
    *(refused("host-" + v.decode().replace(" ", "_"), get(b"Host: " + v)) for v in HOSTILE_HOSTS),
    # CONNECT is not served at all
    refused("connect", head(b"CONNECT wiki.t.test:443 HTTP/1.1", b"Host: wiki.t.test:443"), 405),
    refused(
        "connect-then-tunnel-bytes",
        head(b"CONNECT raw.t.test:80 HTTP/1.1", b"Host: raw.t.test:80") + get(b"Host: raw.t.test"),
        405,
    ),
    # limits on the head: 431 and close
    refused("too-many-headers", get(H, *(b"X-N%d: n" % i for i in range(MAX_HEADERS))), 431),
    refused("head-too-big", get(H, b"X-Big: " + b"a" * MAX_HEAD_BYTES), 431),
]


@pytest.mark.parametrize(("data", "status"), REFUSED)
async def test_refused_requests_reach_no_guest(stack: Stack, data: bytes, status: int) -> None:
    await assert_refused(stack, data, status)


async def assert_refused(stack: Stack, data: bytes, status: int = 400) -> None:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(data)
        reply = await answer(stack, client)
        assert reply.status == status, reply
        assert await client.closed(), "the connection stays open after a refusal"
        assert client.pending == 0, "more responses after the refusal"
    finally:
        await client.close()
    assert await after_sentinel(stack) == []


async def answer(stack: Stack, client: RawClient) -> RawReply:
    """The next response; when none comes, say what the guests got meanwhile."""
    try:
        return await client.reply()
    except NoReply as exc:
        got = stack.wiki.received() + stack.raw.received()
        raise NoReply(f"{exc}; meanwhile the guests got {got!r}") from None


# ------------------------------------------------------------------ forwarded requests


@dataclass(frozen=True)
class Forward:
    data: bytes
    method: str = "GET"
    target: str = "/"
    body: bytes = b""
    host: str | None = "wiki.t.test"  # the Host the guest must get; None: any one Host
    absent: tuple[bytes, ...] = ()  # what the guest must not get anywhere in its bytes


def forwarded(name: str, case: Forward) -> object:
    return pytest.param(case, id=name)


CHUNKED_WITH_EXTRAS = b'5;ext=1\r\nhello\r\n6;q="x y"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n'
ABSOLUTE_WITH_USERINFO = b"http://user:secret@wiki.t.test/u"

FORWARDED = [
    forwarded("plain", Forward(get(H, target=b"/a?b=c"), target="/a?b=c")),
    forwarded("http10", Forward(get(H, target=b"/old", version=b"1.0"), target="/old")),
    forwarded("content-length", Forward(post(CL5) + b"hello", "POST", body=b"hello")),
    forwarded("content-length-0", Forward(post(b"Content-Length: 0"), "POST")),
    # optional whitespace around a field value is not part of it (RFC 9110 §5.5)
    forwarded("cl-ows", Forward(post(b"Content-Length:  5 ") + b"hello", "POST", body=b"hello")),
    forwarded("chunked", Forward(chunked(CHUNKED_HELLO), "POST", body=b"hello")),
    forwarded("chunked-empty", Forward(chunked(CHUNKED_EMPTY), "POST")),
    # The client's chunk layout, extensions and all, never reaches the guest: the proxy frames.
    forwarded(
        "chunked-reframed",
        Forward(
            chunked(CHUNKED_WITH_EXTRAS),
            "POST",
            body=b"hello world",
            absent=(b"ext=1", b'q="x y"', b"5;"),
        ),
    ),
    forwarded(
        "te-tab-value",
        Forward(post(b"Transfer-Encoding:\tchunked") + CHUNKED_HELLO, "POST", body=b"hello"),
    ),
    forwarded(
        "te-padded-value",
        Forward(post(b"Transfer-Encoding:  chunked  ") + CHUNKED_HELLO, "POST", body=b"hello"),
    ),
    forwarded(
        "te-uppercase",
        Forward(post(b"TRANSFER-ENCODING: Chunked") + CHUNKED_HELLO, "POST", body=b"hello"),
    ),
    forwarded("host-case-and-dot", Forward(get(b"Host: WIKI.T.Test."), host=None)),
    forwarded("host-port", Forward(get(b"Host: wiki.t.test:8080"), host=None)),
    forwarded("host-ows", Forward(get(b"Host:  wiki.t.test \t"), host=None)),
    forwarded("wildcard", Forward(get(b"Host: a.wild.t.test"), host="a.wild.t.test")),
    forwarded(
        "absolute-form",
        Forward(get(H, target=b"http://wiki.t.test/abs?q=1"), target="/abs?q=1"),
    ),
    forwarded("absolute-form-no-path", Forward(get(H, target=b"http://wiki.t.test"))),
    forwarded(
        "absolute-form-port",
        Forward(
            get(b"Host: wiki.t.test:8080", target=b"http://wiki.t.test:8080/p"),
            target="/p",
            host="wiki.t.test:8080",
        ),
    ),
    # Userinfo is stripped: the guest's Host is exactly the authority, and no credentials.
    forwarded(
        "absolute-form-userinfo",
        Forward(get(H, target=ABSOLUTE_WITH_USERINFO), target="/u", absent=(b"secret", b"user:")),
    ),
    forwarded(
        "absolute-form-userinfo-like-a-host",
        Forward(
            get(H, target=b"http://raw.t.test:80@wiki.t.test/u"),
            target="/u",
            absent=(b"raw.t.test",),
        ),
    ),
    forwarded("options-asterisk", Forward(head(b"OPTIONS * HTTP/1.1", H), "OPTIONS", "*")),
]


def assert_framed(request: RecordedRequest, body: bytes) -> None:
    """Framed one way, by the proxy: Content-Length of exactly the body, or chunked."""
    length = request.value("Content-Length")
    if request.chunked:
        assert length is None
    elif body:
        assert length == str(len(body)), request
    else:
        assert length in (None, "0"), request
    assert request.body == body


@pytest.mark.parametrize("case", FORWARDED)
async def test_forwarded_requests_reach_the_guest_once_reframed(
    stack: Stack, case: Forward
) -> None:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(case.data)
        reply = await answer(stack, client)
    finally:
        await client.close()
    assert (reply.status, reply.body, reply.value("X-Raw-Upstream")) == (200, OK_BODY, "1"), reply
    await assert_forwarded_once(stack, case)


async def assert_forwarded_once(stack: Stack, case: Forward) -> None:
    (request,) = await after_sentinel(stack)
    assert (request.method, request.target) == (case.method, case.target)
    if case.host is not None:
        assert request.value("Host") == case.host
    assert_framed(request, case.body)
    received = stack.wiki.received()
    for text in case.absent:
        assert text not in received, f"{text!r} reached the guest"


# Requests the RFCs let a recipient accept or refuse, and that cannot be framed two ways by
# a proxy that re-frames them: a 400 that reaches no guest is as good as a correct forward.
EITHER = [
    # An empty chunk-ext-name: invalid, but llhttp takes it, and re-framing drops it.
    forwarded(
        "chunk-ext-no-name",
        Forward(chunked(b"5;=x\r\nhello\r\n0\r\n\r\n"), "POST", body=b"hello", absent=(b"=x",)),
    ),
    # Trailing HTAB is optional whitespace, but llhttp refuses it after "chunked".
    forwarded(
        "te-trailing-tab",
        Forward(post(b"Transfer-Encoding: chunked\t") + CHUNKED_HELLO, "POST", body=b"hello"),
    ),
    # RFC 9112 §2.2: an empty line before the request line SHOULD be ignored.
    forwarded("empty-line-first", Forward(b"\r\n" + get(H))),
    # RFC 9112 §3: a recipient MAY split the request line on any run of whitespace.
    forwarded("request-line-double-space", Forward(head(b"GET  / HTTP/1.1", H))),
    forwarded("obs-text-in-value", Forward(get(H, b"X-A: caf\xe9"))),
]


@pytest.mark.parametrize("case", EITHER)
async def test_odd_but_unambiguous_requests_are_forwarded_once_or_refused(
    stack: Stack, case: Forward
) -> None:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(case.data)
        reply = await answer(stack, client)
        refused = reply.status == 400
        if refused:
            assert await client.closed(), "the connection stays open after a refusal"
    finally:
        await client.close()
    if refused:
        assert await after_sentinel(stack) == []
        return
    assert (reply.status, reply.body) == (200, OK_BODY), reply
    await assert_forwarded_once(stack, case)


async def test_a_body_on_get_then_a_pipelined_request(stack: Stack) -> None:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(get(H, CL5, target=b"/first") + b"hello" + get(H, target=b"/second"))
        first, second = await client.reply(), await client.reply()
    finally:
        await client.close()
    assert (first.status, first.body, second.status, second.body) == (200, OK_BODY, 200, OK_BODY)
    one, two = await after_sentinel(stack)
    assert (one.method, one.target, two.method, two.target) == ("GET", "/first", "GET", "/second")
    assert_framed(one, b"hello")
    assert_framed(two, b"")


async def test_pipelined_chunked_then_content_length(stack: Stack) -> None:
    client = await RawClient.connect(stack.port)
    try:
        await client.send(
            post(TE, target=b"/a")
            + CHUNKED_WITH_EXTRAS
            + post(b"Content-Length: 3", target=b"/b")
            + b"abc"
        )
        first, second = await client.reply(), await client.reply()
    finally:
        await client.close()
    assert (first.status, second.status) == (200, 200)
    one, two = await after_sentinel(stack)
    assert (one.target, two.target) == ("/a", "/b")
    assert_framed(one, b"hello world")
    assert_framed(two, b"abc")


async def test_a_bad_chunk_within_the_held_start_never_reaches_the_guest(stack: Stack) -> None:
    """A chunked body is read CHUNKED_HOLD_BYTES far before the guest is asked: a bad chunk
    in it is a 400, and the guest sees nothing at all."""
    client = await RawClient.connect(stack.port)
    try:
        await client.send(post(TE, target=b"/early") + b"5\r\nhello\r\n")
        await client.send(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: wiki.t.test\r\n\r\n")
        reply = await answer(stack, client)
        assert reply.status == 400
        assert await client.closed()
    finally:
        await client.close()
    assert stack.wiki.received() == b""
    assert await after_sentinel(stack) == []


async def test_a_bad_chunk_after_the_head_went_out_cuts_the_guest_off(stack: Stack) -> None:
    """Past the first CHUNKED_HOLD_BYTES the body streams: the head and the first chunk reach
    the guest before the bad chunk arrives. The guest then sees an incomplete request and its
    connection closed, never a second request made of the rest."""
    first = b"h" * (CHUNKED_HOLD_BYTES + 1)
    client = await RawClient.connect(stack.port)
    try:
        await client.send(post(TE, target=b"/late") + b"%x\r\n%b\r\n" % (len(first), first))
        await wait_for(lambda: first in stack.wiki.received(), 5, "the first chunk upstream")
        await client.send(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: wiki.t.test\r\n\r\n")
        reply = await answer(stack, client)
        assert reply.status == 400
        assert await client.closed()
    finally:
        await client.close()
    (conn,) = stack.wiki.connections
    await wait_for(lambda: conn.closed, 5, "the guest's connection closed")
    with pytest.raises(MalformedRecording, match="incomplete"):
        conn.requests()
    assert b"/smuggled" not in stack.wiki.received()
    stack.wiki.connections.clear()  # the cut-off request is accounted for
    assert await after_sentinel(stack) == []


# ------------------------------------------------------------------ what guests answer


async def test_a_101_to_a_request_without_upgrade_is_502(stack: Stack) -> None:
    stack.wiki.replies.append(SWITCHING_REPLY)
    client = await RawClient.connect(stack.port)
    try:
        await client.send(get(H, target=b"/switch"))
        assert (await client.reply()).status == 502
        # The client's connection is still HTTP (or closed): no tunnel was opened on it.
        await client.send(get(H, target=b"/after"))
        try:
            after = await client.reply()
            assert (after.status, after.body) == (200, OK_BODY)
        except NoReply:
            assert client.eof
            assert client.pending == 0
    finally:
        await client.close()
    await _assert_discarded(stack, "/switch")


AMBIGUOUS_RESPONSES = [
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        False,
        id="cl-te",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        False,
        id="te-cl",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", False, id="two-cl"
    ),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", False, id="cl-plus"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nok", False, id="cl-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\nX-A: b\r\n\r\nok", False, id="bare-lf"),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok", False, id="obs-fold"
    ),
    # A bad chunk comes after the head: a proxy that already sent the head cuts the response.
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        True,
        id="bad-chunk-size",
    ),
    pytest.param(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX0\r\n\r\n",
        True,
        id="chunk-without-crlf",
    ),
]


@pytest.mark.parametrize(("response", "may_cut"), AMBIGUOUS_RESPONSES)
async def test_ambiguous_responses_are_502_and_the_connection_discarded(
    stack: Stack, response: bytes, may_cut: bool
) -> None:
    stack.wiki.replies.append(response)
    client = await RawClient.connect(stack.port)
    try:
        await client.send(get(H, target=b"/ambiguous"))
        try:
            status: int | None = (await client.reply()).status
        except NoReply:
            status = None  # cut after the head
        assert status == 502 or (may_cut and status is None), client.received
    finally:
        await client.close()
    await _assert_discarded(stack, "/ambiguous")


async def _assert_discarded(stack: Stack, target: str) -> None:
    """The connection the bad answer came on got exactly that one request, was closed by the
    proxy, and the next request opened a new one."""
    after = await exchange(stack.port, get(H, target=b"/next"))
    assert (after.status, after.body) == (200, OK_BODY)
    first = stack.wiki.connections[0]
    await wait_for(lambda: first.closed, 5, "the proxy to close the guest connection")
    assert [r.target for r in first.requests()] == [target]
    # Sent once: a guest that answered, however badly, is not asked again.
    assert [r.target for r in stack.wiki.requests()].count(target) == 1
    assert len(stack.wiki.connections) >= 2
