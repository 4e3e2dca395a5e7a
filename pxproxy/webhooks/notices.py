"""From the hub's events to what a webhook tells: one Notice per thing worth a message.

The hub says every state change (a wake's every step, every poll); a webhook says only the
turns: a wake began, it is ready, it failed, an idle stop, a cluster went bad or came back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..events.hub import Event
from .config import WebhookEvent

# Poll states in which a cluster counts as degraded (its guests may be stale or unreachable).
_BAD = frozenset({"degraded", "failed"})


@dataclass(frozen=True, slots=True)
class Notice:
    event: WebhookEvent
    at: float
    guest: str | None = None  # cluster:vmid
    name: str | None = None  # the guest's name, when the inventory knows it
    node: str | None = None
    routes: tuple[str, ...] = ()
    state: str | None = None
    error: str | None = None
    cluster: str | None = None

    @property
    def vmid(self) -> int | None:
        if self.guest is None:
            return None
        tail = self.guest.rpartition(":")[2]
        return int(tail) if tail.isdigit() else None


# The guest's (name, node) by cluster:vmid; None when the inventory does not know it.
GuestInfo = Callable[[str], tuple[str, str] | None]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class NoticeMaker:
    """Follows wake and poll states across events, so only turns become notices."""

    def __init__(self, guest_info: GuestInfo) -> None:
        self.guest_info = guest_info
        self._wake: dict[str, str] = {}  # guest -> last wake state seen
        self._cluster: dict[str, str] = {}  # cluster -> last poll state seen

    def notice(self, event: Event) -> Notice | None:
        if event.kind == "wake":
            return self._from_wake(event)
        if event.kind == "idle":
            return self._from_idle(event)
        if event.kind == "poll":
            return self._from_poll(event)
        return None

    def _from_wake(self, event: Event) -> Notice | None:
        data = event.data
        guest, state = _text(data.get("guest")) or event.guest, _text(data.get("state"))
        if guest is None or state is None:
            return None
        before = self._wake.get(guest)
        self._wake[guest] = state
        kind: WebhookEvent
        if state == "waking" and before != "waking":
            kind = "wake"
        elif state == "ready" and before == "waking":
            kind = "ready"  # not a guest found running, only a wake that finished
        elif state == "failed" and before != "failed":
            kind = "wake_failed"
        else:
            return None
        routes = data.get("routes")
        return self._about_guest(
            kind,
            guest,
            _at(data, event),
            state=state,
            error=_text(data.get("error")),
            routes=tuple(r for r in routes if isinstance(r, str))
            if isinstance(routes, list)
            else (),
        )

    def _from_idle(self, event: Event) -> Notice | None:
        data = event.data
        guest = _text(data.get("guest")) or event.guest
        if guest is None or data.get("event") != "idle_stop":
            return None
        return self._about_guest(
            "idle_stop", guest, _at(data, event), state="stopped", error=_text(data.get("detail"))
        )

    def _from_poll(self, event: Event) -> Notice | None:
        data = event.data
        cluster, state = _text(data.get("cluster")), _text(data.get("state"))
        if cluster is None or state is None or state == "pending":
            return None
        before = self._cluster.get(cluster)
        self._cluster[cluster] = state
        kind: WebhookEvent
        if state in _BAD and before not in _BAD:
            kind = "cluster_degraded"
        elif state == "ok" and before in _BAD:
            kind = "cluster_recovered"
        else:
            return None
        return Notice(
            kind, _at(data, event), state=state, error=_text(data.get("error")), cluster=cluster
        )

    def _about_guest(
        self,
        kind: WebhookEvent,
        guest: str,
        at: float,
        *,
        state: str,
        error: str | None,
        routes: tuple[str, ...] = (),
    ) -> Notice:
        info = self.guest_info(guest)
        return Notice(
            kind,
            at,
            guest=guest,
            name=info[0] if info else None,
            node=info[1] if info else None,
            routes=routes,
            state=state,
            error=error,
            cluster=guest.rpartition(":")[0] or None,
        )


def _at(data: Any, event: Event) -> float:
    at = data.get("at")
    return float(at) if isinstance(at, int | float) and not isinstance(at, bool) else event.at
