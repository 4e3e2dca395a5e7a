"""What idle-watch tells listeners as it happens: each wake-state change of a guest, each idle
stop and each before_stop outcome. The event stream (pxproxy/events/) listens; wake/ knows
nothing of it. A listener runs synchronously inside the waker: it must be quick and not raise
(a raise is logged and the waker goes on)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, Protocol

from .contract import WakeProgress

log = logging.getLogger(__name__)

IdleEvent = Literal["idle_stop", "idle_stop_failed", "before_stop", "before_stop_abandoned"]


class WakeListener(Protocol):
    def wake_changed(self, ref: str, routes: Sequence[str], progress: WakeProgress) -> None:
        """`ref`: the guest as the route names it; `routes`: the names of its routes."""

    def idle_event(self, ref: str, event: IdleEvent, detail: str | None) -> None: ...


class WakeNews:
    """The one fan-out every waker of a manager reports to; listeners come and go."""

    def __init__(self) -> None:
        self._listeners: list[WakeListener] = []

    def listen(self, listener: WakeListener) -> None:
        self._listeners.append(listener)

    def forget(self, listener: WakeListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def wake_changed(self, ref: str, routes: Sequence[str], progress: WakeProgress) -> None:
        for listener in list(self._listeners):
            try:
                listener.wake_changed(ref, tuple(routes), progress)
            except Exception:
                log.exception("wake listener failed on %s", ref)

    def idle_event(self, ref: str, event: IdleEvent, detail: str | None = None) -> None:
        for listener in list(self._listeners):
            try:
                listener.idle_event(ref, event, detail)
            except Exception:
                log.exception("wake listener failed on %s", ref)
