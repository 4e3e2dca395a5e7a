"""ClusterPoller without sockets: failures publish stale data, back off, and never end polling."""

from __future__ import annotations

import asyncio
import contextlib
import json

from pxproxy.inventory.ip_resolution import IpResolver
from pxproxy.inventory.poller import ClusterPoller, PollSettings
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveConnectionError
from pxproxy.pve.models import ClusterStatus

RESOURCES = json.dumps(
    {
        "data": [
            {"id": "lxc/101", "type": "lxc", "vmid": 101, "node": "pve1", "status": "stopped"},
            {"id": "node/pve1", "type": "node", "node": "pve1", "status": "online"},
        ]
    }
).encode()


class ScriptedSource:
    """Answers /cluster/resources from a script of results (an exception is raised)."""

    def __init__(self, script: list[bytes | BaseException]) -> None:
        self.script = script
        self.calls = 0

    async def cluster_resources_raw(self, kind: str | None = None) -> bytes:
        item = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if isinstance(item, BaseException):
            raise item
        return item

    async def cluster_status(self) -> ClusterStatus:
        return ClusterStatus(cluster_name=None, quorate=None, nodes=())

    async def lxc_interfaces(self, node: str, vmid: int) -> object:
        return None

    async def qemu_agent_interfaces(self, node: str, vmid: int) -> object:
        return None

    async def guest_config(self, kind: str, node: str, vmid: int) -> dict[str, object]:
        return {}


async def run_until(inventory: Inventory, poller: ClusterPoller, predicate, timeout_s=5.0):
    task = asyncio.create_task(poller.run())
    try:
        return await inventory.wait_until(predicate, timeout_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(script: list[bytes | BaseException]) -> tuple[Inventory, ClusterPoller, ScriptedSource]:
    inventory = Inventory()
    source = ScriptedSource(script)
    poller = ClusterPoller(
        "home",
        source,
        IpResolver(source),
        inventory.publish,
        settings=PollSettings(interval_s=0.01, backoff_max_s=0.02),
    )
    return inventory, poller, source


async def test_unexpected_error_does_not_end_polling() -> None:
    inventory, poller, source = make([RuntimeError("bug"), RESOURCES])
    snap = await run_until(
        inventory, poller, lambda s: "home" in s.clusters and s.clusters["home"].ok
    )
    assert [g.vmid for g in snap.guests] == [101]
    assert source.calls >= 2
    assert poller.stats.failures == 1


async def test_failure_before_any_success_reports_error_and_no_age() -> None:
    inventory, poller, _ = make([PveConnectionError("cannot reach pve")])
    snap = await run_until(inventory, poller, lambda s: "home" in s.clusters)
    cs = snap.clusters["home"]
    assert not cs.ok
    assert cs.error == "cannot reach pve"
    assert cs.age_s() is None


async def test_failure_after_success_keeps_last_data() -> None:
    inventory, poller, _ = make([RESOURCES, PveConnectionError("down")])
    snap = await run_until(
        inventory, poller, lambda s: "home" in s.clusters and not s.clusters["home"].ok
    )
    cs = snap.clusters["home"]
    assert [g.vmid for g in cs.guests] == [101]
    assert cs.error == "down"
    assert cs.age_s() is not None


async def test_backoff_grows_and_is_capped() -> None:
    _, poller, _ = make([RESOURCES])
    poller.stats.consecutive_failures = 1
    first = poller._backoff_s()
    poller.stats.consecutive_failures = 50
    capped = poller._backoff_s()
    assert 0.01 * 0.8 <= first <= 0.01 * 1.2
    assert capped <= 0.02 * 1.2
