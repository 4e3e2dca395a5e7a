"""fakepve with the few knobs our tests need that it does not have."""

from __future__ import annotations

import time
from typing import Any

from fakepve import FakePve


class TestPve(FakePve):  # type: ignore[misc]
    """fakepve, plus what PVE does that fakepve 0.5 does not: ticket renewal with the ticket as
    password, and per-container /interfaces answers (a DHCP container whose address only the
    running container knows). Also counts requests by path suffix."""

    __test__ = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interfaces_override: dict[int, object] = {}

    async def _lxc_interfaces(self, user: str, v: dict[str, Any]) -> object:
        vmid = int(v["vmid"])
        if vmid in self.interfaces_override:
            ct = self._find_ct(v["node"], vmid)
            return self.interfaces_override[vmid] if ct.status == "running" else None
        return await super()._lxc_interfaces(user, v)

    def check_password(self, user: str, password: str) -> bool:
        # PVE renews a ticket when the current, valid ticket is sent as the password;
        # fakepve 0.5 only knows real passwords.
        session = self.tickets.get(password)
        if session is not None and session["user"] == user and session["expires"] > time.time():
            return True
        return bool(super().check_password(user, password))

    def count(self, suffix: str, method: str = "GET") -> int:
        return sum(1 for m, path, _ in self.requests if m == method and path.endswith(suffix))
