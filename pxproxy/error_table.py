"""The one table from errors to HTTP answers, for the API and the proxy alike.

Proxmox errors (pve/errors.py) and pxproxy's own (wake, shells, stopping) each get one status,
one title and, when waiting helps, a Retry-After. The rule behind the statuses:

- 503 + Retry-After: something on the way is down for now and trying again later may work
  (Proxmox unreachable, its node offline, shells all busy, a wake that failed, pxproxy stopping);
- 504: Proxmox (or the command) did not finish in time;
- 502: Proxmox answered, but not in a way a client can fix (pxproxy's credentials, TLS, a
  malformed answer, a failed task);
- 4xx: the request itself: unknown object (404), a state conflict such as "already running"
  (409; Proxmox says 500), parameters Proxmox refused (400);
- 501: the feature needs configuration this cluster lacks (shells without a root@pam password).

The first row whose type matches wins, so subclasses come before their bases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .problems import Problem
from .pve.errors import (
    PveAuthError,
    PveConnectionError,
    PveError,
    PveNodeUnreachableError,
    PveNotFoundError,
    PveParameterError,
    PvePermissionError,
    PveProtocolError,
    PveServerError,
    PveTaskFailedError,
    PveTaskTimeoutError,
    PveTimeoutError,
    PveTlsError,
)
from .pve.termproxy import ShellBusyError, ShellTimeoutError, ShellUnavailableError
from .shutdown import DaemonStopping
from .wake.contract import WakeError, WakeTimeout
from .wake.service import PowerConflict

__all__ = ["ROWS", "Context", "Row", "problem_for"]

# How soon to try again after a transient 503 of ours.
RETRY_AFTER_S = 5
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Context:
    """What the caller knows about the failed call, for a detail that names it."""

    cluster: str | None = None
    node: str | None = None
    guest: str | None = None  # a guest ref, as the user wrote or sees it
    host: str | None = None  # the proxied host, for the proxy's answers


Detail = Callable[[Any, Context], str]
Extra = Callable[[Any, Context], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Row:
    error: type[BaseException]
    status: int
    title: str
    detail: Detail
    retry_after: bool = False  # Retry-After: the error's own retry_after_s, else RETRY_AFTER_S
    extra: Extra | None = None
    no_store: bool = False


def _message(exc: Any, _: Context) -> str:
    return str(exc.message) if isinstance(exc, PveError | WakeError | PowerConflict) else str(exc)


def _node_unreachable(exc: PveError, ctx: Context) -> str:
    node = f"node {ctx.node}" if ctx.node else "the node"
    return f"{node} is offline or unreachable: {exc.message}"


def _unreachable(exc: PveError, ctx: Context) -> str:
    of = f" of cluster {ctx.cluster!r}" if ctx.cluster else ""
    return f"cannot reach Proxmox{of}: {exc.message}"


def _not_found(exc: PveError, ctx: Context) -> str:
    if ctx.guest:
        return f"Proxmox does not know {ctx.guest}: {exc.message}"
    if ctx.node:
        return f"node {ctx.node}: {exc.message}"
    return f"Proxmox: {exc.message}"


def _permission(exc: PvePermissionError, _: Context) -> str:
    missing = f"{exc.privilege} on {exc.acl_path}" if exc.privilege else "a privilege"
    return f"pxproxy's Proxmox credentials lack {missing}: {exc.message}"


def _permission_extra(exc: PvePermissionError, _: Context) -> dict[str, Any]:
    return {"privilege": exc.privilege, "acl_path": exc.acl_path}


def _wake_extra(exc: WakeError, ctx: Context) -> dict[str, Any]:
    return {
        "guest": ctx.guest or exc.guest,
        "host": ctx.host,
        "error": "wake_timeout" if isinstance(exc, WakeTimeout) else "wake_failed",
    }


def _where(_: Any, ctx: Context) -> dict[str, Any]:
    return {k: v for k, v in (("guest", ctx.guest), ("host", ctx.host)) if v is not None}


ROWS: tuple[Row, ...] = (
    # pxproxy's own
    Row(
        DaemonStopping,
        503,
        "Service Unavailable",
        lambda exc, _: f"{exc}; try again shortly",
        retry_after=True,
        extra=_where,
        no_store=True,
    ),
    Row(
        WakeTimeout,
        503,
        "Guest not ready",
        _message,
        retry_after=True,
        extra=_wake_extra,
        no_store=True,
    ),
    Row(
        WakeError,
        503,
        "Guest could not be started",
        _message,
        retry_after=True,
        extra=_wake_extra,
        no_store=True,
    ),
    Row(PowerConflict, 409, "Conflict", _message),
    Row(ShellUnavailableError, 501, "Not Implemented", _message),
    Row(ShellBusyError, 503, "Service Unavailable", _message, retry_after=True),
    Row(ShellTimeoutError, 504, "Gateway Timeout", _message),
    # Proxmox
    Row(
        PveTaskTimeoutError,
        504,
        "Gateway Timeout",
        _message,
        extra=lambda exc, _: {"upid": exc.upid},
    ),
    Row(PveTaskFailedError, 502, "Task Failed", _message, extra=lambda exc, _: {"upid": exc.upid}),
    Row(PveNodeUnreachableError, 503, "Service Unavailable", _node_unreachable, retry_after=True),
    Row(
        PveTimeoutError, 504, "Gateway Timeout", lambda e, _: f"Proxmox did not answer: {e.message}"
    ),
    Row(
        PveTlsError,
        502,
        "Bad Gateway",
        lambda exc, _: f"TLS to Proxmox failed: {exc.message}",
    ),
    Row(PveConnectionError, 503, "Service Unavailable", _unreachable, retry_after=True),
    Row(
        PveAuthError,
        502,
        "Bad Gateway",
        lambda exc, _: f"Proxmox refused pxproxy's credentials: {exc.message}",
    ),
    Row(PvePermissionError, 502, "Bad Gateway", _permission, extra=_permission_extra),
    Row(
        PveParameterError,
        400,
        "Bad Request",
        lambda exc, _: f"Proxmox rejected the request: {exc}",
        extra=lambda exc, _: {"errors": exc.errors} if exc.errors else {},
    ),
    Row(PveNotFoundError, 404, "Not Found", _not_found),
    Row(
        PveServerError,
        409,
        "Conflict",
        _message,
        extra=lambda exc, _: {"proxmox_status": exc.status},
    ),
    Row(
        PveProtocolError,
        502,
        "Bad Gateway",
        lambda exc, _: f"Proxmox answered unexpectedly: {exc.message}",
    ),
    Row(PveError, 502, "Bad Gateway", lambda exc, _: f"Proxmox error: {exc}"),
)


def row_for(exc: BaseException) -> Row | None:
    return next((row for row in ROWS if isinstance(exc, row.error)), None)


def problem_for(
    exc: BaseException,
    *,
    cluster: str | None = None,
    node: str | None = None,
    guest: str | None = None,
    host: str | None = None,
) -> Problem:
    """The answer for `exc`. A Problem is its own answer; an error the table does not know is
    a 500 whose detail sends the reader to the log (the caller logs it)."""
    if isinstance(exc, Problem):
        return exc
    row = row_for(exc)
    if row is None:
        return Problem(500, "Internal Server Error", "see the daemon log")
    ctx = Context(cluster=cluster, node=node, guest=guest, host=host)
    headers: dict[str, str] = {}
    if row.retry_after:
        seconds = exc.retry_after_s if isinstance(exc, WakeError) else RETRY_AFTER_S
        headers["Retry-After"] = retry_after(seconds)
    if row.no_store:
        headers.update(NO_STORE)
    extra = row.extra(exc, ctx) if row.extra is not None else {}
    return Problem(row.status, row.title, row.detail(exc, ctx), headers=headers, **extra)


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    whole = int(seconds)
    return str(max(1, whole if whole == seconds else whole + 1))
