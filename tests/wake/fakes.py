"""Fakes for idle-watch unit tests: power, probe, clock and a hand-fed inventory."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pxproxy.config.models import IdleConfig, RouteConfig
from pxproxy.inventory.model import Guest
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveConnectionError
from pxproxy.wake.power import PowerError, guest_label

from ..builders import make_guest

CLUSTER = "home"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakePower:
    """Records every call as (action, vmid); `fail` maps an action to the task's error,
    `lost` to the PveConnectionError of a Proxmox that went away after the call was sent.
    `gate`, when set, holds start/resume until the test sets it."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    fail: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    shutdown_timeouts: list[float] = field(default_factory=list)
    # Holds stop/shutdown/pause/hibernate (before they are recorded) until the test sets it.
    stop_gate: asyncio.Event | None = None

    async def _do(self, action: str, guest: Guest) -> None:
        if action not in ("start", "resume") and self.stop_gate is not None:
            await self.stop_gate.wait()
        self.calls.append((action, guest.vmid))
        if action in ("start", "resume") and self.gate is not None:
            await self.gate.wait()
        await asyncio.sleep(0)  # a real task is never instantaneous
        if action in self.lost:
            raise PveConnectionError(self.lost[action])
        if action in self.fail:
            raise PowerError(guest_label(guest), action, self.fail[action], upid="UPID:fake")

    def actions(self, vmid: int | None = None) -> list[str]:
        return [a for a, v in self.calls if vmid is None or v == vmid]

    async def start(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
        await self._do("start", guest)

    async def stop(self, guest: Guest) -> None:
        await self._do("stop", guest)

    async def shutdown(self, guest: Guest, timeout_s: float) -> None:
        self.shutdown_timeouts.append(timeout_s)
        await self._do("shutdown", guest)

    async def pause(self, guest: Guest) -> None:
        await self._do("pause", guest)

    async def hibernate(self, guest: Guest) -> None:
        await self._do("hibernate", guest)

    async def resume(self, guest: Guest, *, poke: asyncio.Event | None = None) -> None:
        await self._do("resume", guest)


class FakeProbe:
    """Ready when `up` is True; counts attempts."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.checks: list[tuple[str, int]] = []
        self.closed = False

    async def check(self, host: str, port: int) -> bool:
        self.checks.append((host, port))
        await asyncio.sleep(0)
        return self.up

    async def close(self) -> None:
        self.closed = True


def guest(
    vmid: int,
    name: str,
    *,
    kind: str = "lxc",
    status: str = "stopped",
    ips: tuple[str, ...] | None = None,
    lock: str | None = None,
) -> Guest:
    addresses = (f"10.0.0.{vmid % 250}",) if ips is None else ips
    assert kind in ("lxc", "qemu")
    made = make_guest(
        vmid,
        name,
        cluster=CLUSTER,
        kind="lxc" if kind == "lxc" else "qemu",
        status=status,
        ips=addresses,
    )
    return made._replace(lock=lock)


def publish(inventory: Inventory, *guests: Guest) -> None:
    inventory.publish(ClusterSnapshot.build(CLUSTER, guests, ()))


def idle(**overrides: object) -> IdleConfig:
    data: dict[str, object] = {"timeout": 60, "wake_timeout": 5, "retry_after": 30}
    data.update(overrides)
    return IdleConfig.model_validate(data)


def route(guest_ref: str, port: int = 80, **idle_overrides: object) -> RouteConfig:
    host = "".join(c if c.isalnum() else "-" for c in guest_ref) + ".example.com"
    return RouteConfig.model_validate(
        {"host": host, "guest": guest_ref, "port": port, "idle": idle(**idle_overrides)}
    )
