"""Webhooks built on a hub of their own, a fake sleeper and fixed jitter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pxproxy.events.hub import Event, EventHub
from pxproxy.webhooks.config import WebhookConfig
from pxproxy.webhooks.service import Webhooks

NAMES = {"lab:7361": ("wiki", "pve1"), "lab:7362": ("game", "pve2")}


class FakeSleeper:
    """Records each backoff wait and returns at once: the delays are asserted, not waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def hook(name: str, url: str, **settings: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"name": name, "url": url, **settings})


@asynccontextmanager
async def webhooks(
    configs: Sequence[WebhookConfig], sleeper: FakeSleeper | None = None, drain_s: float = 1.0
) -> AsyncIterator[tuple[Webhooks, EventHub]]:
    hub = EventHub()
    service = Webhooks(
        configs,
        hub,
        NAMES.get,
        sleep=sleeper or FakeSleeper(),
        random=lambda: 0.5,
        drain_s=drain_s,
    )
    service.start()
    try:
        yield service, hub
    finally:
        hub.close()
        await service.stop()


def wake(guest: str, state: str, step: str = "", error: str | None = None) -> Event:
    data = {
        "guest": guest,
        "routes": ["wiki.test"],
        "state": state,
        "step": step,
        "error": error,
        "at": 1_700_000_000.0,
    }
    return Event("wake", data, guest=guest)


def poll(cluster: str, state: str, error: str | None = None) -> Event:
    data = {"cluster": cluster, "ok": state == "ok", "state": state, "error": error}
    return Event("poll", {**data, "guests": 1, "nodes": 1, "at": 1_700_000_000.0})
