"""Resolve guest IP addresses incrementally and concurrently.

Only guests that need it are asked about each cycle: new ones, those whose status changed or
whose uptime went backwards (restarted), failures whose backoff expired, and a slow periodic
refresh spread over cycles. A failed lookup keeps the previous addresses.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..pve.errors import PveError, PveNotImplementedError, PveServerError
from ..pve.interfaces import addresses_from_agent_interfaces, addresses_from_lxc_interfaces
from ..pve.net_config import static_ips_from_lxc_config, static_ips_from_qemu_config
from .address_policy import AddressPolicy
from .model import Guest, GuestType

log = logging.getLogger(__name__)

# A running guest that answered with no address yet (DHCP still running) is asked again soon.
EMPTY_RETRY_S = 5.0
FAILURE_RETRY_START_S = 3.0


class AddressSource(Protocol):
    """The narrow part of the Proxmox client that resolution needs (a test can fake it)."""

    async def lxc_interfaces(self, node: str, vmid: int) -> object: ...

    async def qemu_agent_interfaces(self, node: str, vmid: int) -> object: ...

    async def guest_config(self, kind: GuestType, node: str, vmid: int) -> dict[str, object]: ...


@dataclass(slots=True)
class _State:
    status: str
    uptime: int
    ips: tuple[str, ...] = ()
    source: str | None = None
    resolved: bool = False
    due_at: float = 0.0
    failures: int = 0
    agent_missing: bool = False


class ResolutionStats:
    __slots__ = ("calls", "failures", "resolved")

    def __init__(self) -> None:
        self.resolved = 0
        self.failures = 0
        self.calls = 0


class IpResolver:
    def __init__(
        self,
        source: AddressSource,
        *,
        policy: AddressPolicy | None = None,
        concurrency: int = 8,
        refresh_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._policy = policy or AddressPolicy()
        self._sem = asyncio.Semaphore(concurrency)
        self._refresh_s = refresh_s
        self._clock = clock
        self._state: dict[str, _State] = {}
        # Addresses kept by the last run (pxproxy/state/): guest id -> (name, addresses).
        self._remembered: dict[str, tuple[str, tuple[str, ...]]] = {}
        # PVE 7 has no /interfaces (501): stop asking and read the config instead.
        self._lxc_interfaces_supported = True
        self.stats = ResolutionStats()

    def remember(self, remembered: Mapping[str, tuple[str, tuple[str, ...]]]) -> None:
        """Before the first poll: the last-seen addresses of the last run, by guest id, with
        the guest's name then. A guest that appears under the same name (not a reused vmid)
        starts from them, so a stopped DHCP guest keeps its `last-seen` address."""
        self._remembered = {k: v for k, v in remembered.items() if v[1]}

    def addresses(self, guest_id: str) -> tuple[tuple[str, ...], str | None]:
        state = self._state.get(guest_id)
        return (state.ips, state.source) if state else ((), None)

    def plan(self, guests: Iterable[Guest]) -> list[Guest]:
        """The guests to resolve this cycle; forgets guests that disappeared."""
        now = self._clock()
        due: list[Guest] = []
        seen: set[str] = set()
        for g in guests:
            seen.add(g.id)
            if g.template:
                continue
            state = self._state.get(g.id)
            if state is None:
                state = self._state[g.id] = _State(g.status, g.uptime)
                kept = self._remembered.pop(g.id, None) if self._remembered else None
                if kept is not None and (not g.name or not kept[0] or kept[0] == g.name):
                    state.ips, state.source = kept[1], "last-seen"
                if g.status != "unknown":
                    due.append(g)
                continue
            if g.status == "unknown":
                continue  # node offline: keep what we knew, ask when it is back
            restarted = g.uptime < state.uptime
            changed = g.status != state.status
            state.uptime = g.uptime
            if changed or restarted:
                state.status = g.status
                state.failures = 0
                state.agent_missing = state.agent_missing and not restarted
                due.append(g)
            elif now >= state.due_at:
                due.append(g)
        if len(seen) != len(self._state):
            for gone in [k for k in self._state if k not in seen]:
                del self._state[gone]
        return due

    async def resolve(self, guests: list[Guest]) -> bool:
        """Resolve concurrently (bounded); True when any guest's addresses changed."""
        if not guests:
            return False
        results = await asyncio.gather(*(self._resolve_one(g) for g in guests))
        return any(results)

    async def _resolve_one(self, guest: Guest) -> bool:
        state = self._state.get(guest.id)
        if state is None:
            return False
        async with self._sem:
            try:
                ips, source = await self._lookup(guest, state)
            except PveError as exc:
                state.failures += 1
                self.stats.failures += 1
                backoff = min(FAILURE_RETRY_START_S * 2 ** (state.failures - 1), self._refresh_s)
                state.due_at = self._clock() + backoff
                log.debug(
                    "address lookup for %s failed (%s); retry in %.0fs", guest.id, exc, backoff
                )
                return False
        self.stats.resolved += 1
        state.failures = 0
        state.resolved = True
        now = self._clock()
        if not ips and guest.status == "running":
            state.due_at = now + min(EMPTY_RETRY_S, self._refresh_s)
        else:
            state.due_at = now + self._refresh_s * _spread(guest.id)
        changed = ips != state.ips or source != state.source
        state.ips, state.source = ips, source
        return changed

    async def _lookup(self, guest: Guest, state: _State) -> tuple[tuple[str, ...], str | None]:
        running = guest.status == "running"
        if guest.type == "lxc":
            if running and self._lxc_interfaces_supported:
                try:
                    self.stats.calls += 1
                    found = self._policy.select(
                        addresses_from_lxc_interfaces(
                            await self._source.lxc_interfaces(guest.node, guest.vmid)
                        )
                    )
                except PveNotImplementedError:
                    self._lxc_interfaces_supported = False
                else:
                    if found:
                        return found, "interfaces"
            return await self._from_config(guest, state)
        if running and not state.agent_missing:
            try:
                self.stats.calls += 1
                found = self._policy.select(
                    addresses_from_agent_interfaces(
                        await self._source.qemu_agent_interfaces(guest.node, guest.vmid)
                    )
                )
            except PveServerError as exc:
                # Agent errors are not failures of the guest: fall back to cloud-init.
                if "No QEMU guest agent configured" in exc.message:
                    state.agent_missing = True
            else:
                if found:
                    return found, "agent"
        return await self._from_config(guest, state)

    async def _from_config(self, guest: Guest, state: _State) -> tuple[tuple[str, ...], str | None]:
        self.stats.calls += 1
        config = await self._source.guest_config(guest.type, guest.node, guest.vmid)
        parse = static_ips_from_lxc_config if guest.type == "lxc" else static_ips_from_qemu_config
        found = self._policy.select(parse(config))
        if found:
            return found, "config"
        if guest.status != "running" and state.ips:
            # A DHCP guest that stopped most likely gets its address back when it starts:
            # keep it, marked, so a wake can route to it (a running owner still wins lookups).
            return state.ips, "last-seen"
        return (), None


def _spread(key: str) -> float:
    """0.75..1.25, fixed per guest: refreshes spread over cycles instead of bunching."""
    return 0.75 + (zlib.crc32(key.encode()) % 1000) / 2000
