"""The daemon in companion mode against the lab: routes declared in guests' notes appear,
change and go as the notes change (through the lab's real PUT .../config), a config route
wins a conflict, bad notes are reported for their guest alone, and the DNS responder answers
for the same guests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster, set_notes, wait_for

# Used by no other test (the lab derives guest addresses from vmids).
WIKI, GIT, SLEEPY = 9601, 9602, 9603
DEADLINE_S = 15


def _notes(host: str, port: int = 8080) -> str:
    return (
        f"Our wiki.\n\n```yaml\npxproxy:\n  routes:\n    - host: {host}\n      port: {port}\n```\n"
    )


@pytest.fixture
async def daemon(lab_server: LabServer) -> AsyncIterator[Daemon]:
    lab_server.cluster.add_guest(WIKI, "lxc", "wiki", "pve1", status="running", tags="pxproxy")
    lab_server.cluster.add_guest(GIT, "lxc", "git", "pve1", status="running", tags="pxproxy")
    lab_server.cluster.add_guest(SLEEPY, "lxc", "sleepy", "pve1", status="stopped")
    await lab_server.cluster.open()
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server, poll_interval="0.3s", notes_refresh="0.5s")],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "dns": {"listen": "127.0.0.1:0", "zone": "pve.internal", "ttl": "2s"},
            "routes": [
                {"host": "taken.test", "guest": "git", "port": 8080},
                {"host": "sleepy.test", "guest": "sleepy", "port": 8080, "idle": {"timeout": "1h"}},
            ],
        }
    )
    running = Daemon(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _routes(daemon: Daemon) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.api_port}/api/v1/routes") as resp,
    ):
        assert resp.status == 200
        body: list[dict[str, Any]] = await resp.json()
        return body


async def _get(daemon: Daemon, host: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{daemon.proxy_port}/", headers={"Host": host}) as resp,
    ):
        return resp.status, await resp.text()


async def test_notes_routes_follow_the_notes(lab_server: LabServer, daemon: Daemon) -> None:
    await set_notes(lab_server, WIKI, description=_notes("wiki.test"))

    async def served(host: str, vmid: int) -> bool:
        return daemon.proxy_port is not None and (await _get(daemon, host)) == (
            200,
            f"{lab_server.cluster.guests[vmid].name} (vmid {vmid})\n",
        )

    await wait_for(lambda: served("wiki.test", WIKI), DEADLINE_S, "the declared route to serve")
    listed = [r for r in await _routes(daemon) if r.get("host") == ["wiki.test"]]
    assert listed[0]["origin"] == "notes"
    assert listed[0]["declared_by"].endswith(f":{WIKI}")

    await set_notes(lab_server, WIKI, description=_notes("docs.test"))
    await wait_for(lambda: served("docs.test", WIKI), DEADLINE_S, "the changed route to serve")
    assert (await _get(daemon, "wiki.test"))[0] == 404

    await set_notes(lab_server, WIKI, tags="")
    await wait_for(
        lambda: all(r.owner is None for r in daemon.routes.current.routes),
        DEADLINE_S,
        "the untagged guest's routes to go",
    )
    assert (await _get(daemon, "docs.test"))[0] == 404


async def test_a_config_route_wins_and_bad_notes_stay_with_their_guest(
    lab_server: LabServer, daemon: Daemon
) -> None:
    await set_notes(lab_server, WIKI, description=_notes("taken.test"))
    await set_notes(lab_server, GIT, description="```yaml\npxproxy: {routes: [{port: nope}]}\n```")

    def reported() -> bool:
        guests = {p.guest.rsplit(":", 1)[1] for p in daemon.routes.current.problems}
        return guests == {str(WIKI), str(GIT)}

    await wait_for(reported, DEADLINE_S, "both guests' problems to be reported")
    problems = {p.guest.rsplit(":", 1)[1]: p.error for p in daemon.routes.current.problems}
    assert "taken.test is already routed by config route taken.test" in problems[str(WIKI)]
    assert "port" in problems[str(GIT)]
    # The config's route still serves its own guest.
    assert await _get(daemon, "taken.test") == (200, f"git (vmid {GIT})\n")
    errors = [r for r in await _routes(daemon) if "error" in r]
    assert sorted(r["guest_name"] for r in errors) == ["git", "wiki"]


async def test_dns_answers_for_guests_and_refuses_outside_the_zone(
    lab_server: LabServer, daemon: Daemon
) -> None:
    assert daemon.dns is not None
    port = daemon.dns.port
    await wait_for(
        lambda: any(g.ips for g in daemon.inventory.snapshot.lookup_ref("wiki").guests),
        DEADLINE_S,
        "wiki's address to be resolved",
    )

    async def ask(name: str, kind: str = "A") -> dns.message.Message:
        query = dns.message.make_query(name, kind)
        return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=5)

    answer = await ask("wiki.pve.internal")
    assert answer.rcode() == dns.rcode.NOERROR
    ips = [r.address for rrset in answer.answer for r in rrset]
    assert ips == [lab_server.cluster.guests[WIKI].ip]
    assert (await ask("wiki.example.com")).rcode() == dns.rcode.REFUSED


async def test_forged_forwarded_host_and_dns_lookups_never_wake(
    lab_server: LabServer, daemon: Daemon
) -> None:
    assert daemon.dns is not None
    await wait_for(lambda: bool(daemon.inventory.snapshot.clusters), DEADLINE_S, "a first poll")
    await wait_for(
        lambda: daemon.wake.gate_for(1).state.value == "asleep", DEADLINE_S, "sleepy asleep"
    )
    async with aiohttp.ClientSession() as http:
        headers = {"Host": "nothing.test", "X-Forwarded-Host": "sleepy.test"}
        url = f"http://127.0.0.1:{daemon.proxy_port}/"
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 404
    for name, kind in (("sleepy.pve.internal", "A"), ("_8080._tcp.sleepy.pve.internal", "SRV")):
        query = dns.message.make_query(name, kind)
        answer = await dns.asyncquery.udp(query, "127.0.0.1", port=daemon.dns.port, timeout=5)
        assert answer.rcode() == dns.rcode.NOERROR
        assert answer.answer, f"{name} {kind}: parked guests answer with pxproxy's address"
    # Parked: the A record is pxproxy's proxy address, the SRV port its proxy port.
    srv = [r for rrset in answer.answer for r in rrset if rrset.rdtype == dns.rdatatype.SRV]
    assert [r.port for r in srv] == [daemon.proxy_port]
    assert daemon.wake.stats.wakes_started == 0
    assert lab_server.cluster.guests[SLEEPY].status == "stopped"


async def test_notes_may_not_open_tcp_listeners_unless_the_config_says_so(
    lab_server: LabServer, daemon: Daemon
) -> None:
    """`notes: {tcp: false}` is the default: a declared TCP route is reported, not served."""
    notes = "```yaml\npxproxy: {listen: '127.0.0.1:0', port: 7000}\n```\n"
    await set_notes(lab_server, GIT, description=notes)

    async def reported() -> bool:
        return any(
            "TCP routes from notes are off" in r.get("error", "") for r in await _routes(daemon)
        )

    await wait_for(reported, DEADLINE_S, "the declared TCP route to be refused")
    assert daemon.tcp_proxy.bound_addresses() == {}
