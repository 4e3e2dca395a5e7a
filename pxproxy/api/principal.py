"""Who a request is: the token its bearer header names, or anonymous on a loopback listener
without configured tokens. One function, for the edge and for endpoints that decide per
request whether they are open (the integrations, with `integrations.public`)."""

from __future__ import annotations

from aiohttp import web

from ..config.models import is_loopback_host
from .auth import ANONYMOUS, Principal, TokenAuthority
from .problems import ApiError


def principal_of(request: web.Request, authority: TokenAuthority, loopback: bool) -> Principal:
    header = request.headers.get("Authorization")
    if authority.configured:
        principal = authority.authenticate(header)
        if principal is None:
            raise ApiError(
                401,
                "Unauthorized",
                "send Authorization: Bearer <secret> of a token from api.tokens"
                if not header
                else "the bearer token is not one of api.tokens",
            )
        return principal
    if not loopback:
        raise ApiError(
            401,
            "Unauthorized",
            "no api.tokens are configured, so this non-loopback listener serves only /health",
        )
    require_loopback_host(request)
    return ANONYMOUS


def require_loopback_host(request: web.Request) -> None:
    """Anonymous answers only to a request addressed to loopback by name: a web page whose
    own name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own Host and is
    refused, so it cannot read the inventory through the visitor's browser."""
    if not is_loopback_name(request.headers.get("Host", "")):
        raise ApiError(
            403,
            "Forbidden",
            "without a token, this API answers only requests addressed to localhost, "
            "127.0.0.1 or [::1] (Host header)",
        )


def is_loopback_name(host_header: str) -> bool:
    host = host_header.strip()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".").lower()
    return host.endswith(".localhost") or is_loopback_host(host)
