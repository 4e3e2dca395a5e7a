"""Bearer tokens of the management API: constant-time checks, scopes and guest allowlists."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass

from ..config.models import ApiToken, Scope
from ..inventory.model import Guest


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    guests: tuple[str, ...]

    def may_touch(self, guest: Guest) -> bool:
        """True when the guest is in the token's allowlist (`*`, names, vmids, globs, refs)."""
        names = (guest.name.lower(), str(guest.vmid), guest.ref, f"{guest.node}/{guest.vmid}")
        return any(
            fnmatch.fnmatchcase(candidate, pattern.lower())
            for pattern in self.guests
            for candidate in names
        )


ANONYMOUS = Principal("anonymous", frozenset({"read"}), ())


class TokenAuthority:
    def __init__(self, tokens: tuple[ApiToken, ...]) -> None:
        # Compare fixed-length digests so neither a secret's length nor its prefix leaks.
        self._entries = [
            (
                hashlib.sha256(t.secret.get_secret_value().encode()).digest(),
                Principal(t.name, frozenset(t.scopes), t.guests),
            )
            for t in tokens
        ]

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def authenticate(self, header: str | None) -> Principal | None:
        if not header or not header.startswith("Bearer "):
            return None
        presented = hashlib.sha256(header[7:].strip().encode()).digest()
        found: Principal | None = None
        for digest, principal in self._entries:
            # No early exit: every token is compared whatever matched.
            if hmac.compare_digest(digest, presented):
                found = principal
        return found


def has_scope(principal: Principal, scope: Scope) -> bool:
    return scope in principal.scopes
