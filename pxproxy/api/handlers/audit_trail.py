"""`GET /api/v1/audit`: the recent audit records and whether the audit file's chain verifies.

Scope `read`, with the token's guest allowlist filtering the records: a token sees the actions
on the guests it may act on (and its own requests, refusals included), the same reach it has for
power and exec. Records about nodes, or naming a guest the allowlist does not admit, are only
for tokens whose allowlist is `*`. The commands run (`argv`) are shown only to tokens with the
`exec` scope: a read-only token (a monitoring integration) must not read what operators typed,
which may hold a password.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from typing import Any

from aiohttp import web

from ...audit.chain_status import chain_status
from ..audit import AuditRecord
from ..auth import Principal, has_scope
from ..context import PRINCIPAL, ApiContext
from ..problems import bad_request
from ._common import context, query_limit, require

__all__ = ["audit_trail"]

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
_GUEST_REF = re.compile(r"[^:/\s]+:\d+")
# What exec, journal and tail record of the command they ran.
_COMMAND_KEYS = ("argv", "fallback")


async def audit_trail(request: web.Request) -> web.Response:
    require(request, "read", "audit")
    unknown = sorted(set(request.query) - {"limit"})
    if unknown:
        raise bad_request(f"unknown query parameter {unknown[0]!r}; use limit")
    limit = query_limit(request.query.get("limit"), default=LIMIT_DEFAULT, maximum=LIMIT_MAX)
    ctx = context(request)
    principal = request[PRINCIPAL]
    admitted = _Admission(ctx, principal)
    entries: list[dict[str, Any]] = []
    # Newest first; the deque holds the daemon's last records (api/audit.py RECENT).
    for record in reversed(ctx.audit.records):
        if len(entries) >= limit:
            break
        if admitted(record):
            entries.append(_shown(record, has_scope(principal, "exec")))
    status = await chain_status(ctx.audit.file)
    body = {"entries": entries, "chain": status.to_json()}
    # default=str as the audit log itself writes them: a detail may hold any value.
    text = json.dumps(body, separators=(",", ":"), default=str)
    return web.Response(text=text, content_type="application/json")


class _Admission:
    """Which records the token may see; each guest decided once per request."""

    def __init__(self, ctx: ApiContext, principal: Principal) -> None:
        self._ctx = ctx
        self._principal = principal
        self._snapshot = ctx.inventory.snapshot
        self._decided: dict[str, bool] = {}

    def __call__(self, record: AuditRecord) -> bool:
        if self._principal.allowlist.all or record.token == self._principal.name:
            return True
        seen = self._decided.get(record.guest)
        if seen is None:
            seen = self._decided[record.guest] = self._decide(record.guest)
        return seen

    def _decide(self, target: str) -> bool:
        if not _GUEST_REF.fullmatch(target):
            return False  # a node, or a ref as a refused request gave it
        guests = self._snapshot.lookup_ref(target).guests
        if len(guests) != 1:
            return False  # gone from the inventory: nothing left to judge it by
        decision = self._principal.may_touch(guests[0], self._snapshot, self._ctx.cluster_names)
        return decision.allowed


def _shown(record: AuditRecord, commands: bool) -> dict[str, Any]:
    entry = asdict(record)
    if not commands and any(k in record.detail for k in _COMMAND_KEYS):
        entry["detail"] = {k: v for k, v in record.detail.items() if k not in _COMMAND_KEYS}
        entry["detail"]["argv_hidden"] = "needs the exec scope"
    return entry
