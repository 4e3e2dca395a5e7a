"""GET /api/v1/events through the real app on loopback: auth and scope, the hello, events as
they are published, the allowlist, keep-alives, overflow and the daemon's stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.auth import TokenAuthority
from pxproxy.api.handlers import CONTEXT
from pxproxy.api.handlers.events import KEEPALIVE
from pxproxy.config.loader import parse_config
from pxproxy.events.hub import Event, EventHub
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

from ..builders import make_guest
from ..support import wait_for

READ = "read-secret-0123456789"
POWER = "power-secret-0123456789"
ONE = "one-guest-secret-01234"
NAMED = "named-guest-secret-0123"

Client = TestClient[Any, Any]
SHORT_KEEPALIVE_S = 0.05


def config(tokens: bool = True) -> Any:
    text = textwrap.dedent(
        f"""
        proxmox:
          - {{name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}}
        api:
          tokens:
            - {{name: reader, secret: {READ}}}
            - {{name: power, secret: {POWER}, scopes: [power]}}
            - {{name: one, secret: {ONE}, guests: ["home:101"]}}
            - {{name: named, secret: {NAMED}, guests: [wiki]}}
        """
    )
    if not tokens:
        text = text.split("api:")[0]
    return parse_config(text, env={})


class Api:
    def __init__(self, client: Client, hub: EventHub, app: web.Application) -> None:
        self.client, self.hub, self.app = client, hub, app

    async def open(self, secret: str | None = READ, query: str = "") -> ClientResponse:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return await self.client.get(f"/api/v1/events{query}", headers=headers)


async def make_api(aiohttp_client: AiohttpClient, *, tokens: bool = True) -> Api:
    inventory, hub = Inventory(), EventHub()
    inventory.publish(
        ClusterSnapshot.build("home", [make_guest(101, "wiki"), make_guest(102, "db")], ())
    )
    ctx = make_context(config(tokens), inventory, Metrics(), loopback=True, events=hub)

    def short_keepalive(app: web.Application) -> None:
        app[KEEPALIVE] = SHORT_KEEPALIVE_S

    app = build_app(ctx, setup=[short_keepalive])
    return Api(await aiohttp_client(app), hub, app)


async def message(resp: ClientResponse) -> tuple[str, Any]:
    """The next SSE message: (kind, data), or ("comment", text) for a comment line."""
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), 5)
        if not raw:
            raise EOFError
        line = raw.decode().rstrip("\n")
        if line == "" and lines:
            break
        if line:
            lines.append(line)
    if lines[0].startswith(":"):
        return "comment", lines[0][1:].strip()
    kind = lines[0].removeprefix("event: ")
    assert lines[1].startswith("data: "), lines
    return kind, json.loads(lines[1].removeprefix("data: "))


async def next_event(resp: ClientResponse) -> tuple[str, Any]:
    """The next message that is not a keep-alive."""
    while True:
        kind, data = await message(resp)
        if (kind, data) != ("comment", "keep-alive"):
            return kind, data


async def opened(api: Api, secret: str = READ) -> ClientResponse:
    resp = await api.open(secret)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    kind, hello = await message(resp)
    assert kind == "hello"
    assert hello["clusters"] == ["home"]
    assert isinstance(hello["server_time"], float)
    return resp


def wake(guest: str, state: str) -> Event:
    data = {"guest": guest, "routes": ["r"], "state": state, "step": state, "error": None}
    return Event("wake", {**data, "at": 1.0}, guest=guest)


async def test_no_token_is_401_and_a_token_without_read_is_403(
    aiohttp_client: AiohttpClient,
) -> None:
    api = await make_api(aiohttp_client)
    resp = await api.open(None)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await api.open("not-a-token-at-all-0000")).status == 401
    refused = await api.open(POWER)
    assert refused.status == 403
    assert "read" in (await refused.json())["detail"]
    assert api.hub.subscribers == 0  # a refused reader never subscribed


async def test_unknown_query_is_400_and_head_is_not_served(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    resp = await api.open(READ, "?since=5")
    assert resp.status == 400
    assert "since" in (await resp.json())["detail"]
    head = await api.client.head("/api/v1/events", headers={"Authorization": f"Bearer {READ}"})
    assert head.status == 405


async def test_hello_then_events_as_published(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    assert api.hub.subscribers == 1
    api.hub.publish(Event("poll", {"cluster": "home", "ok": True}))
    api.hub.publish(wake("home:101", "waking"))
    assert await next_event(resp) == ("poll", {"cluster": "home", "ok": True})
    kind, data = await next_event(resp)
    assert (kind, data["state"]) == ("wake", "waking")
    resp.close()


async def test_guest_events_follow_the_token_allowlist(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    everyone, one, named = [await opened(api, s) for s in (READ, ONE, NAMED)]
    assert api.hub.subscribers == 3
    api.hub.publish(wake("home:102", "waking"))  # db: in no allowlist but `*`
    api.hub.publish(wake("home:999", "waking"))  # in no inventory: `*` only
    api.hub.publish(wake("home:101", "waking"))  # wiki: in all three
    api.hub.publish(Event("routes", {"at": 2.0}))  # about no guest: everyone
    assert [(await next_event(everyone))[1].get("guest") for _ in range(4)] == [
        "home:102",
        "home:999",
        "home:101",
        None,
    ]
    for resp in (one, named):
        kind, data = await next_event(resp)
        assert (kind, data["guest"]) == ("wake", "home:101")
        assert await next_event(resp) == ("routes", {"at": 2.0})
    for resp in (everyone, one, named):
        resp.close()


async def test_anonymous_on_loopback_reads_every_event(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client, tokens=False)
    resp = await api.client.get("/api/v1/events", headers={"Host": "localhost"})
    assert resp.status == 200
    assert (await message(resp))[0] == "hello"
    api.hub.publish(wake("home:102", "ready"))
    assert (await next_event(resp))[1]["guest"] == "home:102"
    resp.close()


async def test_keep_alive_comments_while_nothing_happens(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    # Nothing is published: only keep-alives come, one per (short) interval.
    for _ in range(3):
        assert await message(resp) == ("comment", "keep-alive")
    api.hub.publish(Event("routes", {"at": 3.0}))
    assert await next_event(resp) == ("routes", {"at": 3.0})
    resp.close()


async def test_the_stream_ends_cleanly_when_pxproxy_stops(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    api.hub.publish(Event("routes", {"at": 4.0}))
    api.app[CONTEXT].ctx.stopping.set()
    assert await next_event(resp) == ("routes", {"at": 4.0})  # what was queued goes out first
    assert await next_event(resp) == ("comment", "pxproxy is stopping")
    assert await asyncio.wait_for(resp.content.read(), 5) == b""  # the body ends cleanly
    assert api.hub.subscribers == 0


async def test_a_closed_hub_ends_open_streams_and_new_ones_at_once(
    aiohttp_client: AiohttpClient,
) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    api.hub.close()
    assert await next_event(resp) == ("comment", "pxproxy is stopping")
    assert await asyncio.wait_for(resp.content.read(), 5) == b""
    late = await opened(api)
    assert await next_event(late) == ("comment", "pxproxy is stopping")


async def test_a_reader_that_falls_behind_gets_overflow_and_the_stream_ends(
    aiohttp_client: AiohttpClient,
) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    # Published without a pause: the handler reads none of them before its queue is full.
    for n in range(5000):
        api.hub.publish(Event("poll", {"n": n}))
    kinds = []
    while True:
        try:
            kinds.append((await next_event(resp))[0])
        except EOFError:
            break
    assert kinds[-1] == "overflow"
    assert set(kinds[:-1]) == {"poll"}
    assert len(kinds) < 5000
    assert api.hub.subscribers == 0


async def test_a_reader_that_leaves_is_unsubscribed(aiohttp_client: AiohttpClient) -> None:
    api = await make_api(aiohttp_client)
    resp = await opened(api)
    assert api.hub.subscribers == 1
    resp.close()
    # Noticed at the latest by the next (short) keep-alive's failed write.
    await wait_for(lambda: api.hub.subscribers == 0, 5, "the reader to be dropped")


async def test_a_reload_that_revokes_the_token_ends_its_stream(
    aiohttp_client: AiohttpClient,
) -> None:
    api = await make_api(aiohttp_client)
    kept, revoked, demoted = [await opened(api, s) for s in (ONE, READ, NAMED)]
    cell = api.app[CONTEXT]
    tokens = parse_config(
        textwrap.dedent(
            f"""
            proxmox:
              - {{name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}}
            api:
              tokens:
                - {{name: one, secret: {ONE}, guests: ["home:101"]}}
                - {{name: named, secret: {NAMED}, scopes: [power]}}
            """
        ),
        env={},
    ).api.tokens
    cell.ctx = dataclasses.replace(cell.ctx, authority=TokenAuthority(tokens))
    api.hub.publish(Event("routes", {"at": 5.0}))
    assert await next_event(kept) == ("routes", {"at": 5.0})
    assert await next_event(revoked) == (
        "comment",
        "token refused after a reload: the bearer token is not one of api.tokens",
    )
    assert await asyncio.wait_for(revoked.content.read(), 5) == b""
    assert await next_event(demoted) == (
        "comment",
        "token 'named' lost the 'read' scope in a reload",
    )
    await wait_for(lambda: api.hub.subscribers == 1, 5, "the two streams to end")
    kept.close()
