"""Bearer tokens of the management API: constant-time checks, scopes and guest allowlists."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config.models import ApiToken, Scope
from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from .allowlist import Decision, GuestAllowlist


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    guests: tuple[str, ...]
    allowlist: GuestAllowlist = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Parsed once per token; it also owns the rate limit of the token's warnings.
        object.__setattr__(self, "allowlist", GuestAllowlist(self.name, self.guests))

    def may_touch(self, guest: Guest, snapshot: Snapshot, clusters: Sequence[str]) -> Decision:
        """Whether the guest is in the token's allowlist: `*`, `cluster:vmid`, or an entry
        (name, vmid, node/vmid, glob) that matches this guest and no other in any cluster."""
        return self.allowlist.decide(guest, snapshot, clusters)


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
