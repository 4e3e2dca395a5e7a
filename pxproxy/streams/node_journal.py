"""A node's journal over the Proxmox API (PveClient.node_journal, works with API tokens).

Following means asking again from the last page's end cursor; when nothing is new both cursors
repeat where we are.
`service` filters natively on PVE 9; older versions reject the parameter (400), and then the
lines are filtered here by their syslog identifier.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..pve.client import PveClient
from ..pve.errors import PveParameterError

__all__ = [
    "LIMIT_DEFAULT",
    "LIMIT_MAX",
    "JournalReader",
    "ServiceNameError",
    "validate_service",
]

LIMIT_DEFAULT = 100
LIMIT_MAX = 1000
MAX_SERVICES = 16
MAX_SERVICE_LEN = 255  # systemd's limit on unit names
# Without native filtering, fetch more lines so `limit` matching ones are likely among them.
FALLBACK_FETCH = 5000

# systemd unit names: ASCII letters, digits and ":-_.@" (plus "\" escapes, refused here: no unit
# a user would type needs them). Must not start with "-" or "." (no option or hidden-name tricks).
_SERVICE_CHAR = re.compile(r"[A-Za-z0-9:_.@-]")
_SERVICE_RE = re.compile(r"[A-Za-z0-9:_@][A-Za-z0-9:_.@-]*")
# `Nov 23 01:02:03 pve1 pveproxy[1234]: message`: the identifier is the 5th field.
_IDENT_RE = re.compile(r"^\S+\s+\d+\s+\S+\s+\S+\s+([^\s\[:]+)(?:\[\d+\])?:")


class ServiceNameError(ValueError):
    """A `service` value that is not a plain systemd unit name; the message says why."""


def validate_service(name: str) -> str:
    if not name:
        raise ServiceNameError("service must not be empty")
    if len(name) > MAX_SERVICE_LEN:
        raise ServiceNameError(f"service is longer than {MAX_SERVICE_LEN} characters")
    for ch in name:
        if not _SERVICE_CHAR.fullmatch(ch):
            raise ServiceNameError(
                f"service {name[:40]!r} contains the character {ch!r} (U+{ord(ch):04X}); "
                "unit names use only letters, digits and : - _ . @"
            )
    if not _SERVICE_RE.fullmatch(name):
        raise ServiceNameError(f"service {name[:40]!r} must not start with {name[0]!r}")
    return name


def _ident_matches(line: str, services: Sequence[str]) -> bool:
    m = _IDENT_RE.match(line)
    if m is None:
        return False
    ident = m.group(1)
    return any(ident == s.removesuffix(".service") for s in services)


class JournalReader:
    """Reads one node's journal: `backlog(limit)` first, then `poll()` for what is new."""

    def __init__(self, client: PveClient, node: str, services: Sequence[str] = ()) -> None:
        self._client = client
        self._node = node
        self._services = [validate_service(s) for s in services]
        self._native = True  # PVE 9 filters by service itself
        self._cursor: str | None = None
        self.calls = 0

    @property
    def cursor(self) -> str | None:
        return self._cursor

    async def _fetch(
        self, *, lastentries: int | None = None, startcursor: str | None = None
    ) -> list[str]:
        native = self._native and bool(self._services)
        self.calls += 1
        try:
            page = await self._client.node_journal(
                self._node,
                lastentries=lastentries,
                startcursor=startcursor,
                services=self._services if native else (),
            )
        except PveParameterError as exc:
            if not native or "service" not in exc.errors:
                raise
            # PVE before 9 has no `service`: filter here from now on, over a wider window.
            self._native = False
            wider = FALLBACK_FETCH if lastentries is not None else None
            return await self._fetch(lastentries=wider, startcursor=startcursor)
        self._cursor = page.end_cursor
        lines = list(page.lines)
        if self._services and not self._native:
            lines = [x for x in lines if _ident_matches(x, self._services)]
        return lines

    async def backlog(self, limit: int = LIMIT_DEFAULT) -> list[str]:
        """The last `limit` lines (oldest first); sets the cursor for `poll()`."""
        if not 1 <= limit <= LIMIT_MAX:
            raise ValueError(f"limit must be in 1..{LIMIT_MAX}")
        want = limit if self._native or not self._services else FALLBACK_FETCH
        lines = await self._fetch(lastentries=want)
        return lines[-limit:]

    async def poll(self) -> list[str]:
        """Lines written since the last call (backlog() first)."""
        if self._cursor is None:
            raise RuntimeError("call backlog() before poll()")
        return await self._fetch(startcursor=self._cursor)
