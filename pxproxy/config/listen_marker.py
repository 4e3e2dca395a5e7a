"""Marks a config field as a listening address, so the clash check finds every listener.

A field typed `ListenAddress` (config/models.py) carries `Listener("tcp")` in its metadata;
config/listener_clashes.py walks the models for it, so a listener added later (say
`dns.listen`, as `Annotated[str, ..., Listener("udp")]`) is checked without touching the check.
"""

from __future__ import annotations

from typing import Literal, NamedTuple


class Listener(NamedTuple):
    protocol: Literal["tcp", "udp"]


TCP = Listener("tcp")
UDP = Listener("udp")
