"""`POST /api/v1/guests/{ref}/{action}`: power actions, optionally waiting for the Proxmox task.

Needs the `power` scope and the guest in the token's allowlist. Every attempt on a known guest,
refused or not, is written to the audit log with its result and duration. Actions go through
the one power path (`ApiContext.power`): a guest with an idle route through its waker.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web

from ...config.durations import parse_duration
from ...error_table import problem_for
from ...inventory.model import Guest
from ...pve.errors import PveError
from ...wake.contract import WakeError
from ...wake.service import PowerConflict
from ..audit import AuditRecord
from ..context import PRINCIPAL
from ..problems import ApiError, bad_request
from ._common import (
    GuestDenied,
    audit_refusal,
    context,
    json_response,
    require,
    require_for_guest,
)
from ._guest_lookup import audited_guest

ACTIONS = ("start", "stop", "shutdown", "reboot", "suspend", "resume")
DEFAULT_TIMEOUT_S = 120.0
# A request held open longer than this is more likely forgotten than wanted.
MAX_TIMEOUT_S = 900.0
_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no", "")

T = TypeVar("T")
_STATE_CONFLICT_RE = re.compile(r"\b(already running|not running)\b")


async def guest_power(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in ACTIONS:
        message = f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"
        audit_refusal(request, "power", f"rejected: {message}", {"action": action})
        raise bad_request(message)
    # The scope first, so a token that may never act learns nothing about which guests exist.
    require(request, "power", action)
    try:
        wait, timeout_s = _wait_options(request)
    except ApiError as exc:
        audit_refusal(request, action, f"rejected: {exc.detail}")
        raise
    ctx = context(request)
    guest = audited_guest(request, action)
    principal = request[PRINCIPAL]
    started = time.monotonic()
    detail: dict[str, Any] = {"id": guest.id, "node": guest.node, "wait": wait}
    result: str | None = None
    try:
        require_for_guest(request, "power", guest)
        power = ctx.power
        if power is None or not power.serves(guest.cluster):
            raise ApiError(
                503, "Service Unavailable", f"no Proxmox client for cluster {guest.cluster!r}"
            )
        # The one power path: through idle-watch's waker when the guest has one.
        sent = await _pve(power.act(guest, action), guest)
        upid = sent.upid
        detail["upid"] = upid
        if sent.joined_wake:
            detail["joined_wake"] = True
        body: dict[str, Any] = {
            "upid": upid,
            "guest": guest.id,
            "ref": guest.ref,
            "node": guest.node,
            "action": action,
        }
        if not wait:
            result = "started"
            return json_response(body, status=202)
        # A PveTaskTimeoutError names the UPID: the task goes on in Proxmox, the caller
        # can follow it (the error table answers 504 with `upid`).
        status = await _pve(power.wait(guest, upid, timeout_s), guest)
        body["exitstatus"] = status.exitstatus
        body["duration_s"] = round(time.monotonic() - started, 3)
        if not status.ok:
            result = f"failed: {status.exitstatus}"
            if _STATE_CONFLICT_RE.search(status.exitstatus or ""):
                # QEMU reports "VM 100 already running" in the task, LXC in the call's 500:
                # the same conflict gets the same answer.
                raise ApiError(409, "Conflict", status.exitstatus or "", **body)
            raise ApiError(
                502,
                "Task Failed",
                f"{action} of {guest.ref} failed: {status.exitstatus}",
                **body,
            )
        result = "ok"
        return json_response(body)
    except ApiError as exc:
        if result is None:  # a failed task has set its own
            verb = "denied" if exc.status in (401, 403) else "failed"
            # An allowlist refusal names the rule in full (an ambiguous entry's guests).
            result = f"{verb}: {exc.reason if isinstance(exc, GuestDenied) else exc.detail}"
        raise
    except asyncio.CancelledError:
        # The caller went away while we waited; the Proxmox task itself goes on.
        result = result or "abandoned: the client left while waiting"
        raise
    finally:
        ctx.audit.write(
            AuditRecord(
                token=principal.name,
                action=action,
                guest=guest.ref,
                detail=detail,
                result=result or "failed: internal error",
                duration_s=round(time.monotonic() - started, 3),
            )
        )


async def _pve(call: Awaitable[T], guest: Guest) -> T:
    """Await a Proxmox call, turning its typed errors into answers a user can act on."""
    try:
        return await call
    except (PveError, WakeError, PowerConflict) as exc:
        raise problem_for(exc, cluster=guest.cluster, node=guest.node, guest=guest.ref) from None


def _wait_options(request: web.Request) -> tuple[bool, float]:
    raw_wait = request.query.get("wait", "0").lower()
    if raw_wait not in _TRUE + _FALSE:
        raise bad_request(f"wait must be 1 or 0, not {raw_wait!r}")
    raw_timeout = request.query.get("timeout")
    if raw_timeout is None:
        return raw_wait in _TRUE, DEFAULT_TIMEOUT_S
    try:
        timeout_s = parse_duration(raw_timeout)
    except ValueError as exc:
        raise bad_request(f"timeout: {exc}") from None
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise bad_request(f"timeout must be above 0 and at most {MAX_TIMEOUT_S:g}s")
    return raw_wait in _TRUE, timeout_s
