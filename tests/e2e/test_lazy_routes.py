"""Route refs resolve lazily against the live snapshot: the daemon routes at once, without
waiting for a first poll, and a route to a guest that does not exist yet starts working when
the guest appears."""

from __future__ import annotations

import ast
import inspect

import aiohttp

from pxproxy import daemon as daemon_module
from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, wait_for

# vmid 9775: used by no other test (the lab derives guest addresses from vmids).
LATE = 9775


async def test_a_route_to_a_guest_added_later_is_502_naming_it_then_200(
    lab_server: LabServer,
) -> None:
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "routes": [{"host": "late.test", "guest": "late-guest", "port": 8080}],
        }
    )
    daemon = Daemon(config)
    await daemon.start()
    try:
        url = f"http://127.0.0.1:{daemon.proxy_port}/"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

            async def get() -> tuple[int, str]:
                async with http.get(url, headers={"Host": "late.test"}) as resp:
                    return resp.status, await resp.text()

            await wait_for(lambda: bool(daemon.inventory.snapshot.clusters), 10, "a first poll")
            status, body = await get()
            assert status == 502
            assert "late-guest" in body

            lab_server.cluster.add_guest(LATE, "lxc", "late-guest", "pve1", status="running")
            await lab_server.cluster.open()

            async def served() -> bool:
                return (await get())[0] == 200

            await wait_for(served, 10, "the route to work once the guest appears")
            assert await get() == (200, f"late-guest (vmid {LATE})\n")
    finally:
        await daemon.stop()


def test_the_daemon_hands_the_proxy_idle_watch_itself_before_it_starts(
    lab_server: LabServer,
) -> None:
    """No late-bound gate that raises before idle-watch starts: the manager exists from the
    daemon's construction on, and its gates answer before any poll."""
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "routes": [
                {"host": "a.test", "guest": "nowhere", "port": 80, "idle": {"timeout": "1m"}},
                {"listen": "127.0.0.1:0", "guest": "nowhere", "port": 80},
            ],
        }
    )
    daemon = Daemon(config)
    assert daemon.wake.gate_for(0) is daemon.wake.wakers[0]
    assert daemon.wake.gate_for(0).state.value == "asleep"
    assert [state for _, state in daemon.wake.states()][1].value == "ready"


def test_daemon_py_raises_no_runtime_error_and_has_no_late_bound_gates() -> None:
    tree = ast.parse(inspect.getsource(daemon_module))
    raised = [
        node.exc for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None
    ]
    names = [ast.unparse(exc) for exc in raised]
    assert not [n for n in names if "RuntimeError" in n], names
    for late in ("_gate", "_route_gate", "_route_states", "_note_power_action"):
        assert not hasattr(Daemon, late), late
