"""The proxy in front of two recording guests (raw_upstream.py), and raw request builders:
what the smuggling corpus and the head fuzz share.

Routes: wiki.t.test and *.wild.t.test go to the `wiki` guest; raw.t.test to the `raw` guest,
the route a confused Host would reach instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yarl import URL

from .conftest import HOST, RunningProxy, StartProxy, routes, snapshot_guest
from .raw_upstream import RawUpstream

WIKI_VMID, RAW_VMID = 7161, 7162
H = b"Host: wiki.t.test"


@dataclass
class Stack:
    proxy: RunningProxy
    port: int
    wiki: RawUpstream
    raw: RawUpstream


async def start_stack(
    start_proxy: StartProxy, wiki: RawUpstream, raw: RawUpstream, **proxy_config: Any
) -> Stack:
    px = await start_proxy(
        routes(
            {"host": ["wiki.t.test", "*.wild.t.test"], "guest": "wiki", "port": wiki.port},
            {"host": "raw.t.test", "guest": "raw", "port": raw.port},
        ),
        [snapshot_guest(WIKI_VMID, "wiki", (HOST,)), snapshot_guest(RAW_VMID, "raw", (HOST,))],
        **proxy_config,
    )
    port = URL(px.url).port
    assert port is not None
    return Stack(px, port, wiki, raw)


def head(line: bytes, *fields: bytes) -> bytes:
    """A request head: its request line and header lines, each ended by CRLF."""
    return b"".join(x + b"\r\n" for x in (line, *fields)) + b"\r\n"


def get(*fields: bytes, target: bytes = b"/", version: bytes = b"1.1") -> bytes:
    return head(b"GET " + target + b" HTTP/" + version, *fields)
