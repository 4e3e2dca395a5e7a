"""Typed errors raised by the Proxmox client.

Callers catch the category they care about; nothing here knows about HTTP answers of our own.
"""

from __future__ import annotations

import re

_PERMISSION_RE = re.compile(r"Permission check failed \((?P<path>[^,()]*),\s*(?P<priv>[^()]*)\)")


class PveError(Exception):
    """Any failure talking to Proxmox."""

    def __init__(self, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        code = f"HTTP {self.status}: " if self.status is not None else ""
        return f"{code}{self.message}{where}"


class PveConnectionError(PveError):
    """The API endpoint could not be reached (refused, reset, timeout, DNS)."""


class PveTlsError(PveConnectionError):
    """The TLS handshake failed: untrusted certificate or fingerprint mismatch."""


class PveTimeoutError(PveConnectionError):
    """A call did not complete within its timeout."""


class PveAuthError(PveError):
    """Credentials were refused (401): wrong token, wrong password, expired ticket, bad CSRF."""


class PvePermissionError(PveError):
    """The user lacks a privilege (403). `privilege` and `acl_path` come from PVE's message."""

    def __init__(self, message: str, *, status: int | None = 403, path: str = "") -> None:
        super().__init__(message, status=status, path=path)
        match = _PERMISSION_RE.search(message)
        self.acl_path = match.group("path").strip() if match else None
        self.privilege = match.group("priv").strip() if match else None


class PveNotFoundError(PveError):
    """The node, guest or object does not exist."""


class PveNotImplementedError(PveNotFoundError):
    """The endpoint does not exist on this Proxmox version (501)."""


class PveNodeUnreachableError(PveError):
    """The node behind the API proxy is offline or unreachable (595/596)."""


class PveParameterError(PveError):
    """PVE rejected parameters (400); `errors` maps each field to PVE's message."""

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, str] | None = None,
        status: int | None = 400,
        path: str = "",
    ) -> None:
        super().__init__(message, status=status, path=path)
        self.errors = dict(errors or {})

    def __str__(self) -> str:
        fields = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        return super().__str__() + (f" [{fields}]" if fields else "")


class PveServerError(PveError):
    """A handler error (500) with PVE's message, e.g. "CT 101 already running"."""


class PveTaskFailedError(PveError):
    """A task ended with an exit status other than OK or WARNINGS."""

    def __init__(self, upid: str, exitstatus: str) -> None:
        super().__init__(f"task {upid} failed: {exitstatus}")
        self.upid = upid
        self.exitstatus = exitstatus


class PveTaskTimeoutError(PveError):
    """A task was still running when we stopped waiting for it."""

    def __init__(self, upid: str, waited_s: float) -> None:
        super().__init__(f"task {upid} still running after {waited_s:.1f}s")
        self.upid = upid


class PveProtocolError(PveError):
    """The answer did not have the shape Proxmox documents."""


_NOT_FOUND_HINTS = ("does not exist", "no such", "not found", "unable to find")


def error_for_status(status: int, message: str, path: str, errors: object = None) -> PveError:
    """Map an HTTP status and PVE's message to the typed error."""
    if status == 400:
        fields = (
            {str(k): str(v).strip() for k, v in errors.items()} if isinstance(errors, dict) else {}
        )
        return PveParameterError(message, errors=fields, path=path)
    if status == 401:
        return PveAuthError(message, status=status, path=path)
    if status == 403:
        return PvePermissionError(message, status=status, path=path)
    if status == 404:
        return PveNotFoundError(message, status=status, path=path)
    if status == 501:
        return PveNotImplementedError(message, status=status, path=path)
    if status in (595, 596):
        return PveNodeUnreachableError(message, status=status, path=path)
    if status >= 500 and any(h in message.lower() for h in _NOT_FOUND_HINTS):
        return PveNotFoundError(message, status=status, path=path)
    if status >= 500:
        return PveServerError(message, status=status, path=path)
    return PveError(message, status=status, path=path)
