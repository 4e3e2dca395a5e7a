"""Idle-watch across restarts: rebuild each waker from the store, the live snapshot and, for
running VMs on suspend routes, `status/current` (a paused VM shows `running` in
/cluster/resources; only `qmpstatus` tells). And the records idle-watch hands the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ..config.models import RouteConfig
from ..inventory.model import Guest, GuestType
from ..inventory.snapshot import Snapshot
from ..pve.errors import PveError
from ..pve.models import GuestStatus
from ..state.store import Circuit, SavedState, Sleep, guest_key
from .contract import Gate
from .waker import Waker, resolve_guest

log = logging.getLogger(__name__)

# Each status/current asked at start gets this long; without an answer the store's word holds.
STATUS_TIMEOUT_S = 5.0


class GuestStatusApi(Protocol):
    """The part of PveClient restoring needs (a test can fake it)."""

    async def guest_status(self, kind: GuestType, node: str, vmid: int) -> GuestStatus: ...


def route_key(route: RouteConfig) -> str:
    """The store's name for a route: its first host, or `tcp:`/`udp:` and its listen address."""
    return route.host[0].lower() if route.host else f"{route.protocol}:{route.listen}"


def routes_of(routes: Sequence[RouteConfig], gates: Sequence[Gate]) -> dict[Waker, list[str]]:
    """Each waker's route keys (a dependency without routes of its own has none)."""
    out: dict[Waker, list[str]] = {}
    for route, gate in zip(routes, gates, strict=True):
        if isinstance(gate, Waker):
            out.setdefault(gate, []).append(route_key(route))
    return out


def _worth_asking(waker: Waker, guest: Guest, saved: SavedState) -> bool:
    if guest.type != "qemu" or guest.status != "running":
        return False
    sleep = saved.sleeps.get(guest_key(guest.cluster, guest.id))
    suspends = waker.idle is not None and waker.idle.stop_method == "suspend"
    return suspends or (sleep is not None and sleep.how == "paused")


async def _paused(api: GuestStatusApi, guest: Guest) -> bool | None:
    try:
        async with asyncio.timeout(STATUS_TIMEOUT_S):
            status = await api.guest_status(guest.type, guest.node, guest.vmid)
    except (PveError, TimeoutError) as exc:
        log.warning(
            "idle-watch: cannot tell whether %s is paused (%s); going by the state file",
            guest.ref,
            exc,
        )
        return None
    return status.paused


async def restore_wakers(
    wakers: Iterable[Waker],
    route_keys: Mapping[Waker, Sequence[str]],
    snapshot: Snapshot,
    saved: SavedState,
    status: Mapping[str, GuestStatusApi],
) -> None:
    """Hand each waker what the store kept, with status/current's answer where it matters
    (asked concurrently). A waker whose guest is not in the snapshot yet gets the store's
    records alone, applied once its guest appears."""
    asks: list[tuple[Waker, asyncio.Task[bool | None] | None]] = []
    async with asyncio.TaskGroup() as group:
        for waker in wakers:
            found = resolve_guest(snapshot, waker.ref)
            api = None if isinstance(found, str) else status.get(found.cluster)
            task = None
            if (
                api is not None
                and not isinstance(found, str)
                and _worth_asking(waker, found, saved)
            ):
                task = group.create_task(_paused(api, found), name=f"restore:{waker.ref}")
            asks.append((waker, task))
    for waker, task in asks:
        times = [saved.activity[k] for k in route_keys.get(waker, ()) if k in saved.activity]
        waker.restore(
            saved,
            paused=task.result() if task is not None else None,
            activity_at=max(times) if times else None,
        )


def wake_records(
    wakers: Iterable[Waker],
    route_keys: Mapping[Waker, Sequence[str]],
    carry: SavedState | None,
) -> SavedState:
    """Sleeps, circuits and activity as idle-watch has them now. `carry`: the records loaded
    at start, kept for guests no waker has found yet (their first poll may still come)."""
    sleeps: dict[str, Sleep] = {}
    circuits: dict[str, Circuit] = {}
    activity: dict[str, float] = {}
    claimed: set[str] = set()
    for waker in wakers:
        if waker.restoring:
            # Its guest is not found yet, so its records were not applied: its activity is
            # only its construction time, and saving that would reset the saved idle clock.
            if carry is not None:
                for key in route_keys.get(waker, ()):
                    if key in carry.activity:
                        activity[key] = carry.activity[key]
        else:
            at = waker.last_activity_at()
            for key in route_keys.get(waker, ()):
                activity[key] = at
        persisted = waker.persisted()
        if persisted is None:
            continue
        key, sleep, circuit = persisted
        claimed.add(key)
        if sleep is not None:
            sleeps[key] = sleep
        if circuit is not None:
            circuits[key] = circuit
    if carry is not None:
        sleeps.update({k: v for k, v in carry.sleeps.items() if k not in claimed})
        circuits.update({k: v for k, v in carry.circuits.items() if k not in claimed})
    return SavedState(sleeps=sleeps, circuits=circuits, activity=activity)
