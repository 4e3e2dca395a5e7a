from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from aiohttp import web

from ...config.models import Scope
from ...inventory.model import Guest
from ...inventory.snapshot import Match
from ..allowlist import Decision
from ..audit import AuditRecord
from ..auth import has_scope
from ..context import PRINCIPAL, ApiContext, ContextCell
from ..problems import ApiError, ambiguous, bad_request, not_found

CONTEXT = web.AppKey("context", ContextCell)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT].ctx


def app_context(app: web.Application) -> ApiContext:
    return app[CONTEXT].ctx


def require(request: web.Request, scope: Scope, action: str = "read") -> None:
    """403 unless the token has the scope; the refusal is audited (every endpoint, read ones
    too: a token used where it may not be is worth a line), naming the target as asked for."""
    principal = request[PRINCIPAL]
    if not has_scope(principal, scope):
        message = f"token {principal.name!r} lacks the {scope!r} scope"
        audit_refusal(request, action, f"denied: {message}", {"scope": scope})
        raise ApiError(403, "Forbidden", message)


def requested_target(request: web.Request) -> str:
    """The guest or node a request names, as given (a refusal does not resolve it)."""
    info = request.match_info
    if "ref" in info:
        return info["ref"]
    if "vmid" in info:
        return f"{info['node']}/{info['vmid']}"
    if "node" in info:
        return f"node/{info['node']}"
    return ""


def audit_refusal(
    request: web.Request, action: str, result: str, detail: dict[str, Any] | None = None
) -> None:
    """An audit line for a request refused before its guest was looked up."""
    context(request).audit.write(
        AuditRecord(
            token=request[PRINCIPAL].name,
            action=action,
            guest=requested_target(request),
            detail={"method": request.method, "path": request.path, **(detail or {})},
            result=result,
        )
    )


class GuestDenied(ApiError):
    """403: the guest is not in the token's allowlist. `reason` is the full rule for the audit
    log (the other guests an ambiguous entry matches); the client gets the rule without them."""

    def __init__(self, token: str, guest: Guest, decision: Decision) -> None:
        base = f"token {token!r} may not act on guest {guest.ref}"
        public = "; ".join(u.public for u in decision.unresolved)
        super().__init__(403, "Forbidden", f"{base}: {public}" if public else base)
        full = "; ".join(str(u) for u in decision.unresolved)
        self.reason = f"{base}: {full}" if full else base


def require_for_guest(request: web.Request, scope: Scope, guest: Guest) -> None:
    """The scope, and the guest in the token's allowlist (power and exec), judged against the
    inventory as it is now."""
    require(request, scope)
    principal = request[PRINCIPAL]
    ctx = context(request)
    decision = principal.may_touch(guest, ctx.inventory.snapshot, ctx.cluster_names)
    if not decision.allowed:
        raise GuestDenied(principal.name, guest, decision)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data, separators=(",", ":")), content_type="application/json"
    )


@lru_cache(maxsize=32768)
def guest_json(guest: Guest) -> str:
    """A guest's JSON text. Guests are immutable values, so equal guests share one encoding;
    stats change every poll, and the LRU drops the old ones."""
    return json.dumps(guest.to_json(), separators=(",", ":"))


def json_text_response(text: str, status: int = 200) -> web.Response:
    return web.Response(status=status, text=text, content_type="application/json")


def candidate(guest: Guest) -> dict[str, Any]:
    return {
        "id": guest.id,
        "ref": guest.ref,
        "cluster": guest.cluster,
        "node": guest.node,
        "vmid": guest.vmid,
        "name": guest.name,
        "status": guest.status,
    }


def one_guest(match: Match, what: str) -> Guest:
    """The single guest of a match, else 404 / 409 naming the query and the candidates."""
    if len(match.guests) == 1:
        return match.guests[0]
    if not match.guests:
        raise not_found(f"no guest matches {what}")
    raise ambiguous(
        f"{len(match.guests)} guests match {what}; use cluster:vmid or node/vmid",
        [candidate(g) for g in match.guests],
    )


def query_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """`?limit=`: digits only ("+5", " 5", "5.0", "1e3" are refused, not reinterpreted), in
    1..maximum; `default` when absent."""
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= maximum:
        raise bad_request(
            f"limit must be an integer in 1..{maximum}, not {raw[:40]!r}", parameter="limit"
        )
    return int(raw)
