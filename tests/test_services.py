"""The composition root's services: built in one place, started in order, stopped in reverse,
and nothing left running or open after stop()."""

from __future__ import annotations

import asyncio

from pxproxy.config.models import Config
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.services import Services

from .support import lab_cluster, wait_for

# vmid 9776: used by no other test (the lab derives guest addresses from vmids).
GUEST = 9776


def _ours(task: asyncio.Task[object]) -> bool:
    """A task running pxproxy's code (not the lab's server, not this test)."""
    code = getattr(task.get_coro(), "cr_code", None)
    path = code.co_filename if code is not None else ""
    return task is not asyncio.current_task() and "/pxproxy/" in path and "/lab/" not in path


def config(lab: LabServer) -> Config:
    second = lab_cluster(lab, name="lab2")
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab), second],
            "routes": [
                {"host": "s.test", "guest": f"lab:{GUEST}", "port": 80, "idle": {"timeout": "1m"}}
            ],
        }
    )


async def test_services_start_in_order_and_stop_in_reverse_leaving_nothing(
    lab_server: LabServer,
) -> None:
    lab_server.cluster.add_guest(GUEST, "lxc", "svc", "pve1", status="running")
    inventory = Inventory()
    before = asyncio.all_tasks()
    services = Services(config(lab_server), inventory, None)
    await services.start()
    started = [
        "client:lab",
        "poller:lab",
        "client:lab2",
        "poller:lab2",
        "shells",
        "stats",
        "idle-watch",
    ]
    assert services.trace == [("start", name) for name in started]
    # Running: both pollers publish, and idle-watch follows what they see.
    await wait_for(lambda: set(inventory.snapshot.clusters) == {"lab", "lab2"}, 10, "polls")
    await wait_for(lambda: services.wake.gate_for(0).state.value == "ready", 10, "idle-watch")
    assert any(c.client._session is not None for c in services.clusters)

    await services.stop()
    assert services.trace[len(started) :] == [("stop", name) for name in reversed(started)]
    assert [t.get_name() for t in asyncio.all_tasks() - before if _ours(t)] == []
    for cluster in services.clusters:
        session = cluster.client._session
        assert session is None or session.closed, cluster.name
