"""Who a request is: the token its bearer header names, or anonymous on a loopback listener
without configured tokens. One function, for the edge and for endpoints that decide per
request whether they are open (the integrations, with `integrations.public`)."""

from __future__ import annotations

from aiohttp import web

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
    return ANONYMOUS
