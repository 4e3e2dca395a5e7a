"""Who may call the lab's API: password users, API tokens, tickets with CSRF, and an optional
ACL. Mirrors PVE's rules as shared/pve-reference.md states them."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .state import LabError

TICKET_TTL_S = 7200.0  # PVE: 2 h


@dataclass(slots=True)
class _Ticket:
    user: str
    csrf: str
    expires: float


@dataclass
class LabAccess:
    """root@pam always holds every privilege; others hold what `grant` gave them, or
    everything while no grant was ever made (an open lab)."""

    users: dict[str, str] = field(default_factory=dict)  # userid -> password
    tokens: dict[str, str] = field(default_factory=dict)  # user@realm!name -> secret
    ticket_ttl_s: float = TICKET_TTL_S
    clock: Callable[[], float] = time.time
    acl: dict[str, list[tuple[str, frozenset[str]]]] | None = None
    _tickets: dict[str, _Ticket] = field(default_factory=dict)

    # -- tickets ------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> tuple[str, str, str]:
        """(userid, ticket, csrf). The password may be a valid ticket of the user (renewal)."""
        user = username if "@" in username else username + "@pam"
        known = self.users.get(user)
        renewal = self._tickets.get(password)
        ok = (known is not None and hmac.compare_digest(known, password)) or (
            renewal is not None and renewal.user == user and renewal.expires > self.clock()
        )
        if not ok:
            raise LabError(401, "authentication failure")
        now = self.clock()
        ticket = f"PVE:{user}:{int(now):08X}::{secrets.token_urlsafe(32)}"
        csrf = f"{int(now):08X}:{secrets.token_urlsafe(24)}"
        self._tickets[ticket] = _Ticket(user, csrf, now + self.ticket_ttl_s)
        return user, ticket, csrf

    def expire_tickets(self) -> None:
        """Every ticket issued so far stops working (as if its 2 h had passed)."""
        self._tickets.clear()

    def authenticate(
        self, method: str, authorization: str | None, cookie: str | None, csrf: str | None
    ) -> str:
        """The user (or token id) behind a request, or LabError 401 in PVE's wording."""
        if authorization and authorization.startswith("PVEAPIToken="):
            tokenid, _, secret = authorization[len("PVEAPIToken=") :].partition("=")
            known = self.tokens.get(tokenid)
            if known is None or not hmac.compare_digest(known, secret):
                raise LabError(401, "authentication failure")
            return tokenid
        if not cookie:
            raise LabError(401, "No ticket")
        session = self._tickets.get(cookie)
        if session is None or session.expires < self.clock():
            raise LabError(401, "permission denied - invalid PVE ticket")
        if method not in ("GET", "HEAD") and not hmac.compare_digest(csrf or "", session.csrf):
            raise LabError(401, "Permission denied - invalid csrf token")
        return session.user

    # -- permissions --------------------------------------------------------------------------

    def grant(self, user: str, path: str, *privileges: str) -> None:
        if self.acl is None:
            self.acl = {}
        self.acl.setdefault(user, []).append((path.rstrip("/") or "/", frozenset(privileges)))

    def allowed(self, user: str, path: str, privilege: str) -> bool:
        owner = user.split("!", 1)[0]
        if self.acl is None or owner == "root@pam":
            return True
        for who in dict.fromkeys((user, owner)):
            for granted, privs in self.acl.get(who, ()):
                if privilege in privs and (
                    granted == "/" or path == granted or path.startswith(granted + "/")
                ):
                    return True
        return False

    def require(self, user: str, path: str, privilege: str) -> None:
        if not self.allowed(user, path, privilege):
            raise LabError(403, f"Permission check failed ({path}, {privilege})")
