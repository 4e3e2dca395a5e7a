"""`pxproxy ls | lookup | routes`: what the daemon knows, as tables (or its JSON with --json)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from .client_format import guests_table, lookup_text, routes_table
from .client_http import EXIT_API_ERROR, ApiClient, CliError, say


def _dump(doc: object) -> None:
    say(json.dumps(doc, indent=2))


async def ls(client: ApiClient, filters: Sequence[tuple[str, str]], *, raw: bool) -> int:
    guests = await client.json("GET", "/api/v1/guests", params=filters)
    if not isinstance(guests, list):
        raise CliError("the API answered /api/v1/guests with no list", EXIT_API_ERROR)
    if raw:
        _dump(guests)
    else:
        say(guests_table(guests))
    return 0


def lookup_kind(query: str) -> str:
    """`ip` if the text parses as an IP address (v4 or v6, a zone too), else `host`."""
    try:
        ipaddress.ip_address(query.strip().strip("[]"))
    except ValueError:
        return "host"
    return "ip"


async def lookup(client: ApiClient, query: str, *, raw: bool) -> int:
    kind = lookup_kind(query)
    value = query.strip().strip("[]") if kind == "ip" else query
    doc = await client.json("GET", "/api/v1/lookup", params=[(kind, value)])
    if raw:
        _dump(doc)
    elif isinstance(doc, dict):
        say(lookup_text(doc))
    return 0


async def routes(client: ApiClient, *, raw: bool) -> int:
    items = await client.json("GET", "/api/v1/routes")
    if not isinstance(items, list):
        raise CliError("the API answered /api/v1/routes with no list", EXIT_API_ERROR)
    if raw:
        _dump(items)
    elif items:
        say(routes_table(items))
    else:
        say("no routes configured")
    return 0
