"""Two listeners of the config that would need the same socket.

Found by walking the models for fields marked `Listener` (config/listen_marker.py):
`listen.proxy`, `listen.api`, every TCP and UDP route's `listen` (its protocol is its
route's `protocol`), and whatever is marked later.

Two addresses clash when they have the same protocol and port and their hosts overlap:
the same address, or a wildcard (`0.0.0.0`, `::`) and any address of its family. IPv4 and
IPv6 never overlap: asyncio binds IPv6 sockets with IPV6_V6ONLY, so `[::]:80` and
`0.0.0.0:80` can both listen. `localhost` stands for 127.0.0.1 and ::1 (asyncio binds every
address it resolves to). Port 0 asks the kernel for a free port and never clashes.
"""

from __future__ import annotations

import ipaddress
import typing
from collections.abc import Iterator
from typing import NamedTuple

from pydantic.fields import FieldInfo

from .listen_marker import Listener
from .models import split_address
from .problems import Problem
from .raw_view import RawSection, item_model_of, model_of

WILDCARD = "*"
_FAMILY = {"ipv4": "IPv4", "ipv6": "IPv6", "name": "named"}
_WILDCARDS = {"": ("ipv4", WILDCARD), "0.0.0.0": ("ipv4", WILDCARD), "::": ("ipv6", WILDCARD)}


class Bind(NamedTuple):
    """One listening address of the config."""

    key: str  # its key path, e.g. routes[2].listen
    text: str  # the address as written
    protocol: str
    host: str
    port: int
    default: bool = False  # not written in the file: the key's default


def endpoints(host: str) -> frozenset[tuple[str, str]]:
    """(family, address) pairs a host binds; address WILDCARD for every address of the family.
    A host name other than localhost is its own family: it clashes only with itself."""
    if host in _WILDCARDS:
        return frozenset([_WILDCARDS[host]])
    if host.lower() == "localhost":
        return frozenset([("ipv4", "127.0.0.1"), ("ipv6", "::1")])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return frozenset([("name", host.lower().rstrip("."))])
    if address.is_unspecified:
        return frozenset([(f"ipv{address.version}", WILDCARD)])
    return frozenset([(f"ipv{address.version}", str(address))])


def overlap(a: str, b: str) -> tuple[str, str] | None:
    """The first overlapping (family, address) of two hosts, else None."""
    for family, first in sorted(endpoints(a)):
        for other_family, second in sorted(endpoints(b)):
            if family == other_family and WILDCARD in (first, second):
                return family, WILDCARD
            if family == other_family and first == second:
                return family, first
    return None


def _markers(field: FieldInfo) -> list[Listener]:
    """The field's Listener markers, in order: one per protocol (`dns.listen` has UDP and TCP)."""
    found = [meta for meta in field.metadata if isinstance(meta, Listener)]
    pending: list[object] = [field.annotation]
    while pending:
        annotation = pending.pop()
        if typing.get_origin(annotation) is typing.Annotated:
            found.extend(m for m in typing.get_args(annotation)[1:] if isinstance(m, Listener))
        pending.extend(typing.get_args(annotation))
    return list(dict.fromkeys(found))


def _protocol(section: RawSection, marker: Listener) -> str:
    """The marker's protocol, or the one its sibling field names (an invalid one: the
    marker's default; the structural pass reports it)."""
    if marker.protocol_field is None:
        return marker.protocol
    chosen = section.value(marker.protocol_field)
    return chosen if chosen in ("tcp", "udp") else marker.protocol


def find_listeners(section: RawSection) -> Iterator[Bind]:
    """Every valid listening address under `section`, in the models' field order."""
    for name, field in section.model.model_fields.items():
        markers = _markers(field)
        if markers:
            value = section.value(name)
            if isinstance(value, str):
                host, port = split_address(value)
                for marker in markers:
                    yield Bind(
                        section.path(name),
                        value,
                        _protocol(section, marker),
                        host,
                        port,
                        not section.present(name),
                    )
        elif model_of(field.annotation) is not None:
            sub = section.section(name)
            if sub is not None:
                yield from find_listeners(sub)
        elif item_model_of(field.annotation) is not None:
            for item in section.items(name):
                yield from find_listeners(item)


def _named(bind: Bind) -> str:
    return f"{bind.key} ({'default ' if bind.default else ''}{bind.text})"


def clash_problems(binds: list[Bind]) -> list[Problem]:
    """One problem per listener that clashes with an earlier one, naming both keys."""
    problems: list[Problem] = []
    for i, later in enumerate(binds):
        if later.port == 0:
            continue
        for earlier in binds[:i]:
            if earlier.protocol != later.protocol or earlier.port != later.port:
                continue
            found = overlap(earlier.host, later.host)
            if found is None:
                continue
            family, address = found
            why = (
                f"a wildcard address takes port {later.port} on every {_FAMILY[family]} address"
                if address == WILDCARD
                else "the same address and port"
            )
            problems.append(
                Problem(
                    later.key,
                    f"{later.text} clashes with {_named(earlier)}: {why}; "
                    f"give one of them another port",
                )
            )
            break
    return problems
