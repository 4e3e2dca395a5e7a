"""The worker-to-daemon hop (proxy/relay.py): the head a worker writes, what the daemon's
relay listener believes of it, and one request through a real relay listener to a lab guest."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pxproxy.config.models import ProxyConfig
from pxproxy.inventory.store import Inventory
from pxproxy.lab.guest_servers import GuestServers
from pxproxy.lab.state import LabCluster, LabGuest
from pxproxy.proxy.http import HttpProxy
from pxproxy.proxy.relay import PEER_FIELD, SCHEME_FIELD, SECRET_FIELD, RelayCheck, relay_head
from pxproxy.proxy.request import ClientRequest, Refusal, check_head
from pxproxy.proxy.routes import RouteTable
from pxproxy.proxy.upstream import SnapshotUpstreams
from pxproxy.wake.contract import ALWAYS_READY

from .conftest import HOST, publish, routes, snapshot_guest
from .raw_client import exchange

SECRET = "0123456789abcdef"
GUEST_VMID = 7281  # this file's lab guest (vmids 7281-7289 are this suite's)
Fields = list[tuple[str, str]]


def request(
    fields: Fields,
    *,
    method: str = "GET",
    target: str = "/path?q=1",
    peer: str | None = "198.51.100.7",
    upgrade: bool = False,
) -> ClientRequest:
    parsed = check_head(method, target, "1.1", fields, True, upgrade)
    parsed.peer = peer
    return parsed


def parse(head: bytes) -> tuple[str, Fields]:
    """The request line and the fields of a head relay_head wrote."""
    assert head.endswith(b"\r\n\r\n")
    line, *rest = head[:-4].decode("latin-1").split("\r\n")
    fields = []
    for text in rest:
        name, _, value = text.partition(": ")
        fields.append((name, value))
    return line, fields


def named(fields: Fields, name: str) -> list[str]:
    return [v for n, v in fields if n.lower() == name.lower()]


def relayed(head: bytes, *, upgrade: bool = False) -> ClientRequest:
    """The request the daemon's relay listener makes of `head` (as its server would)."""
    line, fields = parse(head)
    method, target, version = line.split(" ")
    return check_head(method, target, version.removeprefix("HTTP/"), fields, True, upgrade)


# ---------------------------------------------------------------------- relay_head


def test_relay_head_keeps_the_end_to_end_fields_in_order() -> None:
    fields = [
        ("Host", "wiki.test"),
        ("Accept", "text/html"),
        ("X-Forwarded-For", "10.9.9.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "outer.test"),
        ("Forwarded", "for=10.9.9.9"),
        ("Cookie", "a=1"),
        ("cookie", "b=2"),
    ]
    line, out = parse(relay_head(request(fields), scheme="http", secret=SECRET))
    assert line == "GET /path?q=1 HTTP/1.1"
    assert out[0] == ("Host", "wiki.test")
    # As sent: the daemon decides whether to believe them (trusted_proxies of the client).
    assert out[1:8] == fields[1:]


def test_relay_head_drops_hop_by_hop_framing_and_ours() -> None:
    fields = [
        ("Host", "wiki.test"),
        ("Connection", "keep-alive, X-Hop-Secret"),
        ("X-Hop-Secret", "for the next hop only"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Sum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Proxy-Connection", "keep-alive"),
        ("Content-Length", "5"),
        ("Expect", "100-continue"),
        ("X-Pxproxy-Relay", "forged"),
        ("X-Pxproxy-Peer", "10.0.0.1"),
        ("x-pxproxy-scheme", "https"),
        ("X-PXPROXY-Anything", "1"),
        ("User-Agent", "test"),
    ]
    head = relay_head(request(fields, method="POST"), scheme="https", secret=SECRET)
    _, out = parse(head)
    names = [n.lower() for n, _ in out]
    for gone in (
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "x-pxproxy-anything",
    ):
        assert gone not in names, gone
    assert named(out, "Host") == ["wiki.test"]
    assert named(out, "User-Agent") == ["test"]
    # Exactly one of each of ours, the worker's, never the client's.
    assert named(out, SECRET_FIELD) == [SECRET]
    assert named(out, PEER_FIELD) == ["198.51.100.7"]
    assert named(out, SCHEME_FIELD) == ["https"]
    assert named(out, "Content-Length") == ["5"]
    assert named(out, "Expect") == ["100-continue"]  # re-made, for the daemon to answer
    assert named(out, "Transfer-Encoding") == []


def test_relay_head_routes_by_the_one_authority() -> None:
    # An absolute-form target: origin-form out, the target's authority as Host.
    req = request([("Host", "wiki.test")], target="http://wiki.test/a/b?c")
    line, out = parse(relay_head(req, scheme="http", secret=SECRET))
    assert line == "GET /a/b?c HTTP/1.1"
    assert named(out, "Host") == ["wiki.test"]


def test_relay_head_of_a_request_without_a_peer() -> None:
    _, out = parse(relay_head(request([("Host", "a.test")], peer=None), scheme="http", secret="s"))
    assert named(out, PEER_FIELD) == [""]


@pytest.mark.parametrize(
    ("method", "fields", "length", "chunked"),
    [
        ("POST", [("Content-Length", "12")], ["12"], []),
        ("POST", [("Transfer-Encoding", "chunked")], [], ["chunked"]),
        ("POST", [("Content-Length", "0")], ["0"], []),
        ("PUT", [("Content-Length", "0")], ["0"], []),
        ("PATCH", [("Content-Length", "0")], ["0"], []),
        ("GET", [("Content-Length", "0")], [], []),  # a GET needs no framing
        ("GET", [], [], []),
        ("DELETE", [("Content-Length", "3")], ["3"], []),
    ],
)
def test_relay_head_frames_the_body_anew(
    method: str, fields: Fields, length: list[str], chunked: list[str]
) -> None:
    req = request([("Host", "wiki.test"), *fields], method=method)
    _, out = parse(relay_head(req, scheme="http", secret=SECRET))
    assert named(out, "Content-Length") == length
    assert named(out, "Transfer-Encoding") == chunked
    back = relayed(relay_head(req, scheme="http", secret=SECRET))
    # The same body (a GET's "Content-Length: 0" goes: no length and length 0 are one).
    assert (back.body, back.length or 0) == (req.body, req.length or 0)


def test_relay_head_of_a_websocket_asks_for_the_upgrade() -> None:
    fields = [
        ("Host", "wiki.test"),
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    req = request(fields, target="/ws", upgrade=True)
    assert req.websocket
    head = relay_head(req, scheme="http", secret=SECRET)
    _, out = parse(head)
    assert named(out, "Connection") == ["Upgrade"]
    assert named(out, "Upgrade") == ["websocket"]
    assert named(out, "Sec-WebSocket-Key") == ["dGhlIHNhbXBsZSBub25jZQ=="]
    assert named(out, "Sec-WebSocket-Version") == ["13"]
    assert relayed(head, upgrade=True).websocket


def test_relay_head_of_a_declined_upgrade_asks_for_none() -> None:
    req = request([("Host", "wiki.test"), ("Connection", "Upgrade"), ("Upgrade", "h2c")])
    assert not req.websocket
    _, out = parse(relay_head(req, scheme="http", secret=SECRET))
    assert named(out, "Connection") == []
    assert named(out, "Upgrade") == []


# ---------------------------------------------------------------------- RelayCheck.adopt


def relay_fields(
    *, secret: str | None = SECRET, peer: str | None = "203.0.113.9", scheme: str | None = "https"
) -> Fields:
    fields: Fields = [("Host", "wiki.test"), ("Accept", "*/*")]
    if secret is not None:
        fields.append((SECRET_FIELD, secret))
    if peer is not None:
        fields.append((PEER_FIELD, peer))
    if scheme is not None:
        fields.append((SCHEME_FIELD, scheme))
    return fields


def adopted(fields: Fields) -> ClientRequest:
    req = request(fields, peer="127.0.0.1")  # the worker's address, as the listener saw it
    RelayCheck(SECRET).adopt(req)
    return req


def refused(fields: Fields) -> Refusal:
    with pytest.raises(Refusal) as caught:
        adopted(fields)
    return caught.value


def test_adopt_takes_the_fields_and_the_client() -> None:
    req = adopted(relay_fields())
    assert req.fields == [("Host", "wiki.test"), ("Accept", "*/*")]
    assert (req.peer, req.scheme) == ("203.0.113.9", "https")


def test_adopt_matches_names_in_any_case() -> None:
    fields: Fields = [
        ("Host", "wiki.test"),
        ("x-pxproxy-relay", SECRET),
        ("X-PXPROXY-PEER", " 203.0.113.9 "),
        ("X-Pxproxy-Scheme", "http"),
    ]
    req = adopted(fields)
    assert req.fields == [("Host", "wiki.test")]
    assert (req.peer, req.scheme) == ("203.0.113.9", "http")


def test_adopt_an_empty_peer_is_none() -> None:
    req = adopted(relay_fields(peer=""))
    assert req.peer is None
    assert req.scheme == "https"


@pytest.mark.parametrize("peer", ["2001:db8::7", "::ffff:203.0.113.9", "fe80::1%eth0"])
def test_adopt_ipv6_peers(peer: str) -> None:
    assert adopted(relay_fields(peer=peer)).peer == peer


def test_adopt_drops_other_fields_of_ours() -> None:
    req = adopted([*relay_fields(), ("X-Pxproxy-Other", "1")])
    assert all(not n.lower().startswith("x-pxproxy-") for n, _ in req.fields)


@pytest.mark.parametrize(
    "fields",
    [
        relay_fields(secret=None),
        relay_fields(secret="wrong"),
        relay_fields(secret=SECRET + "0"),
        relay_fields(secret=""),
        [*relay_fields(), (SECRET_FIELD, SECRET)],  # two, even when both are right
        [*relay_fields(), (SECRET_FIELD, "wrong")],
    ],
)
def test_adopt_refuses_without_the_one_secret(fields: Fields) -> None:
    refusal = refused(fields)
    assert refusal.status == 403
    assert SECRET not in refusal.text  # fixed wording, never the request's


def test_adopt_checks_the_secret_before_the_rest() -> None:
    # A client without the secret learns nothing of which other field is wrong.
    assert refused(relay_fields(secret=None, peer="not an address", scheme=None)).status == 403


@pytest.mark.parametrize(
    "fields",
    [
        relay_fields(peer=None),
        relay_fields(scheme=None),
        [*relay_fields(), (PEER_FIELD, "203.0.113.10")],
        [*relay_fields(), (SCHEME_FIELD, "https")],
        relay_fields(scheme="ftp"),
        relay_fields(scheme="HTTPS"),
        relay_fields(scheme=""),
        relay_fields(peer="wiki.test"),
        relay_fields(peer="203.0.113.300"),
        relay_fields(peer="203.0.113.9:5000"),
        relay_fields(peer="[2001:db8::7]"),
    ],
)
def test_adopt_refuses_bad_relay_fields(fields: Fields) -> None:
    assert refused(fields).status == 400


def test_adopt_leaves_a_refused_request_alone() -> None:
    req = request(relay_fields(scheme="ftp"), peer="127.0.0.1")
    before = list(req.fields)
    with pytest.raises(Refusal):
        RelayCheck(SECRET).adopt(req)
    assert (req.fields, req.peer, req.scheme) == (before, "127.0.0.1", "http")


def test_a_relayed_head_is_adopted_as_the_worker_meant() -> None:
    fields = [("Host", "wiki.test"), ("X-Pxproxy-Peer", "10.6.6.6"), ("Accept", "*/*")]
    head = relay_head(request(fields, peer="2001:db8::7"), scheme="https", secret=SECRET)
    back = relayed(head)
    RelayCheck(SECRET).adopt(back)
    assert back.fields == [("Host", "wiki.test"), ("Accept", "*/*")]
    assert (back.peer, back.scheme) == ("2001:db8::7", "https")


# ---------------------------------------------------------------------- a real relay listener


@pytest.fixture
async def guest() -> AsyncIterator[LabGuest]:
    servers = GuestServers()
    cluster = LabCluster(runtime=servers)
    cluster.add_node("pve1")
    cluster.add_guest(GUEST_VMID, "lxc", "wiki", "pve1", status="running")
    await cluster.open()
    try:
        yield cluster.guests[GUEST_VMID]
    finally:
        await cluster.close()
        await servers.close_all()


StartRelay = Callable[..., Awaitable[int]]


@pytest.fixture
async def start_relay(guest: LabGuest) -> AsyncIterator[StartRelay]:
    """start_relay(**proxy_config) -> the port of a daemon's relay listener in front of
    `guest` (as wiki.test)."""
    stack = contextlib.AsyncExitStack()

    async def start(**proxy_config: object) -> int:
        inventory = Inventory()
        publish(inventory, [snapshot_guest(guest.vmid, guest.name, (guest.ip,))])
        proxy = HttpProxy(
            RouteTable(routes({"host": "wiki.test", "guest": "wiki", "port": 8080})),
            SnapshotUpstreams(inventory),
            lambda route: ALWAYS_READY,
            ProxyConfig.model_validate(proxy_config),
        )
        stack.push_async_callback(proxy.close)
        listener = await proxy.listen(HOST, 0, relay=RelayCheck(SECRET))
        stack.callback(listener.close)
        assert listener.port is not None
        return listener.port

    async with stack:
        yield start


def client_request(peer: str) -> ClientRequest:
    return request(
        [
            ("Host", "wiki.test"),
            ("X-Forwarded-For", "10.6.6.6"),  # a client's claim
            ("X-Pxproxy-Peer", "10.6.6.6"),
            ("Connection", "close"),
        ],
        target="/headers",
        peer=peer,
    )


async def test_the_guest_sees_the_relayed_client(start_relay: StartRelay) -> None:
    port = await start_relay()
    head = relay_head(client_request("203.0.113.9"), scheme="https", secret=SECRET)
    reply = await exchange(port, head)
    assert reply.status == 200, reply.body
    seen = {k.lower(): v for k, v in json.loads(reply.body).items()}
    # The client is not a trusted proxy: its X-Forwarded-For is replaced by its address.
    assert seen["x-forwarded-for"] == "203.0.113.9"
    assert seen["x-forwarded-proto"] == "https"
    assert seen["host"] == "wiki.test"
    assert not [k for k in seen if k.startswith("x-pxproxy-")]


async def test_trust_is_decided_by_the_relayed_client(start_relay: StartRelay) -> None:
    port = await start_relay(trusted_proxies=["203.0.113.0/24"])
    head = relay_head(client_request("203.0.113.9"), scheme="http", secret=SECRET)
    reply = await exchange(port, head)
    assert reply.status == 200, reply.body
    seen = {k.lower(): v for k, v in json.loads(reply.body).items()}
    assert seen["x-forwarded-for"] == "10.6.6.6, 203.0.113.9"
    assert seen["x-forwarded-proto"] == "http"


@pytest.mark.parametrize("secret", [None, "wrong"])
async def test_the_relay_listener_refuses_without_the_secret(
    start_relay: StartRelay, secret: str | None
) -> None:
    port = await start_relay()
    head = relay_head(client_request("203.0.113.9"), scheme="https", secret=secret or "")
    if secret is None:
        head = head.replace(f"{SECRET_FIELD}: \r\n".encode(), b"")
        assert SECRET_FIELD.encode() not in head
    reply = await exchange(port, head)
    assert reply.status == 403
    assert b"workers only" in reply.body


async def test_a_plain_client_of_the_relay_listener_is_refused(start_relay: StartRelay) -> None:
    port = await start_relay()
    reply = await exchange(port, b"GET /headers HTTP/1.1\r\nHost: wiki.test\r\n\r\n")
    assert reply.status == 403
