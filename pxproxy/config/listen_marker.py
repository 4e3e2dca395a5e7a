"""Marks a config field as a listening address, so the clash check finds every listener.

A field typed `ListenAddress` (config/models.py) carries `Listener("tcp")` in its metadata;
config/listener_clashes.py walks the models for it, so a listener added later (say
`dns.listen`, as `Annotated[str, ..., Listener("udp")]`) is checked without touching the check.
A route's `listen` is `Listener("tcp", protocol_field="protocol")`: its protocol is the route's.
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class Listener(NamedTuple):
    protocol: Literal["tcp", "udp"]
    # A sibling field that names the protocol instead, when the listener has one
    # (a route's `listen` is TCP or UDP by its `protocol`); `protocol` is its default.
    protocol_field: str | None = None


TCP = Listener("tcp")
UDP = Listener("udp")
# A stream route's listen address: TCP or UDP by the route's `protocol` key.
STREAM = Listener("tcp", protocol_field="protocol")
