"""Allowlists against two lab clusters that each have a guest named `wiki` (issue 8, item 1):
a daemon with both, exec and power actions through its API, the audit log and the warnings,
and `pxproxy check` on the same pair."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from pxproxy.check import check
from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.certs import LabCertificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from ..support import HOST, wait_for
from . import test_power
from .test_power import AuditCapture

# vmids of this file only. 8804 exists in both clusters; guests get no ports, so the two labs
# never bind the same address.
HOME_WIKI, OTHER_WIKI, HOME_DB, SHARED_VMID, OTHER_SCRATCH = 8801, 8802, 8803, 8804, 8806

OPS = "allow-ops-secret-0123456"
BY_NAME = "allow-wiki-secret-0123456"
BOUND = "allow-bound-secret-0123456"
UNIQUE = "allow-unique-secret-0123456"
BY_VMID = "allow-vmid-secret-0123456"
LOGS = "allow-logs-secret-0123456"
NO_PATHS = "allow-nopaths-secret-0123456"

audit = test_power.audit  # the fixture: audit lines as the `pxproxy.audit` log has them


@dataclass
class Labs:
    home: LabServer
    other: LabServer

    def tasks(self) -> int:
        return len(self.home.tasks) + len(self.other.tasks)

    def commands(self) -> int:
        return len(self.home.shell_commands) + len(self.other.shell_commands)


def _guest(cluster: LabCluster, vmid: int, name: str, node: str) -> None:
    cluster.add_guest(
        vmid, "lxc", name, node, status="running", ports=(), boot_time_s=0.05,
        shutdown_time_s=0.05,
    )  # fmt: skip


@pytest.fixture
async def labs(lab_certificate: LabCertificate) -> AsyncIterator[Labs]:
    home = LabCluster(cluster_name="home")
    home.add_node("pve1")
    _guest(home, HOME_WIKI, "wiki", "pve1")
    _guest(home, HOME_DB, "db", "pve1")
    _guest(home, SHARED_VMID, "files", "pve1")
    other = LabCluster(cluster_name="other")
    other.add_node("pve2")
    _guest(other, OTHER_WIKI, "wiki", "pve2")
    _guest(other, SHARED_VMID, "backup", "pve2")
    _guest(other, OTHER_SCRATCH, "scratch", "pve2")
    servers = [LabServer(c, host=HOST, port=0, certificate=lab_certificate) for c in (home, other)]
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await server.start()
            stack.push_async_callback(server.stop)
        yield Labs(*servers)


def config(labs: Labs) -> Config:
    def cluster(name: str, lab: LabServer) -> dict[str, Any]:
        return {
            "name": name,
            "url": lab.url,
            "username": "root@pam",
            "password": lab.credentials.root_password,
            "tls": {"fingerprint": lab.fingerprint},
            "poll_interval": "100ms",
            "ips": {"loopback": True},
        }

    def token(name: str, secret: str, guests: list[str], **extra: Any) -> dict[str, Any]:
        return {"name": name, "secret": secret, "scopes": ["read", "power", "exec"],
                "guests": guests, **extra}  # fmt: skip

    return Config.model_validate(
        {
            "proxmox": [cluster("home", labs.home), cluster("other", labs.other)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {
                "tokens": [
                    token("ops", OPS, ["*"]),
                    token("by-name", BY_NAME, ["wiki"]),
                    token("bound", BOUND, [f"other:{OTHER_WIKI}"]),
                    token("unique", UNIQUE, ["db"]),
                    token("by-vmid", BY_VMID, [str(SHARED_VMID)]),
                    token("logs", LOGS, [f"home:{HOME_WIKI}"], paths=["/var/log"]),
                    token("no-paths", NO_PATHS, [f"home:{HOME_WIKI}"], paths=[]),
                ]
            },
        }
    )


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def exec(self, token: str, node: str, vmid: int) -> tuple[int, str]:
        async with self.session.post(
            f"/exec/{node}/{vmid}", json={"argv": ["echo", "hi"]}, headers=_auth(token)
        ) as resp:
            return resp.status, await resp.text()

    async def power(self, token: str, ref: str, action: str = "reboot") -> tuple[int, Any]:
        async with self.session.post(
            f"/api/v1/guests/{ref}/{action}?wait=1", headers=_auth(token)
        ) as resp:
            return resp.status, await resp.json(content_type=None)

    async def get(self, token: str, path: str) -> tuple[int, str]:
        async with self.session.get(path, headers=_auth(token)) as resp:
            return resp.status, await resp.text()

    async def names(self) -> list[str]:
        async with self.session.get("/api/v1/guests", headers=_auth(OPS)) as resp:
            return sorted(g["name"] for g in await resp.json())


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextlib.asynccontextmanager
async def running(labs: Labs) -> AsyncIterator[Api]:
    daemon = Daemon(config(labs))
    await daemon.start()
    try:
        async with aiohttp.ClientSession(
            f"http://127.0.0.1:{daemon.api_port}", timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            api = Api(session)
            total = len(labs.home.cluster.guests) + len(labs.other.cluster.guests)

            async def both_polled() -> bool:
                return len(await api.names()) == total

            await wait_for(both_polled, 10, "the first poll of both clusters")
            yield api
    finally:
        await daemon.stop()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pxproxy.api.allowlist" and r.levelno == logging.WARNING
    ]


async def test_a_name_in_both_clusters_is_refused_on_both(
    labs: Labs, audit: AuditCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pxproxy.api.allowlist")
    async with running(labs) as api:
        before = (labs.tasks(), labs.commands())
        for node, vmid, ref in (("pve1", HOME_WIKI, "home"), ("pve2", OTHER_WIKI, "other")):
            status, text = await api.exec(BY_NAME, node, vmid)
            assert status == 403, text
            assert f"may not act on guest {ref}:{vmid}" in text
            assert "allowlist entry 'wiki' matches 2 guests" in text
            status, body = await api.power(BY_NAME, f"{ref}:{vmid}")
            assert status == 403, body
            # The client learns the rule, not which guest the other cluster has.
            other = OTHER_WIKI if vmid == HOME_WIKI else HOME_WIKI
            assert str(other) not in body["detail"]
        # The same name through the power endpoint's own ref lookup is ambiguous (409).
        status, body = await api.power(BY_NAME, "wiki")
        assert status == 409
        assert (labs.tasks(), labs.commands()) == before  # nothing reached either Proxmox
    rule = f"ambiguous allowlist entry 'wiki' matches home:{HOME_WIKI}, other:{OTHER_WIKI}"
    refusals = [(r["action"], r["guest"]) for r in audit.records if rule in r["result"]]
    assert refusals == [
        ("exec", f"home:{HOME_WIKI}"),
        ("reboot", f"home:{HOME_WIKI}"),
        ("exec", f"other:{OTHER_WIKI}"),
        ("reboot", f"other:{OTHER_WIKI}"),
    ]
    assert all(r["token"] == "by-name" for r in audit.records)
    # The four allowlist refusals are denials; the ambiguous ref is refused (and audited) too.
    assert [r["result"].split(":", 1)[0] for r in audit.records] == ["denied"] * 4 + ["rejected"]
    assert "2 guests match ref 'wiki'" in audit.records[-1]["result"]
    warned = warnings_of(caplog)
    # One per refused guest: the second request on each was held back by the rate limit.
    assert warned == [
        f"token 'by-name' refused on {ref}: {rule}; an entry allows a guest only while it "
        "matches no other (use cluster:vmid)"
        for ref in (f"home:{HOME_WIKI}", f"other:{OTHER_WIKI}")
    ]


async def test_cluster_vmid_works_on_exactly_that_guest(labs: Labs, audit: AuditCapture) -> None:
    async with running(labs) as api:
        assert await api.exec(BOUND, "pve2", OTHER_WIKI) == (200, "hi\n[exit status 0]\n")
        status, body = await api.power(BOUND, f"other:{OTHER_WIKI}")
        assert status == 200, body
        assert body["exitstatus"] == "OK"
        before = (labs.tasks(), labs.commands())
        status, _ = await api.exec(BOUND, "pve1", HOME_WIKI)
        assert status == 403
        status, body = await api.power(BOUND, f"home:{HOME_WIKI}")
        assert status == 403
        assert body["detail"] == f"token 'bound' may not act on guest home:{HOME_WIKI}"
        assert (labs.tasks(), labs.commands()) == before
    assert [t.type for t in labs.other.tasks] == ["vzreboot"]
    refused = f"token 'bound' may not act on guest home:{HOME_WIKI}"
    assert labs.home.tasks == []
    assert [(r["action"], r["guest"], r["result"]) for r in audit.records] == [
        ("exec", f"other:{OTHER_WIKI}", "exit 0"),
        ("reboot", f"other:{OTHER_WIKI}", "ok"),
        ("exec", f"home:{HOME_WIKI}", f"denied: {refused}"),
        ("reboot", f"home:{HOME_WIKI}", f"denied: {refused}"),
    ]


async def test_unique_name_works_until_a_rename_makes_it_ambiguous(
    labs: Labs, audit: AuditCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pxproxy.api.allowlist")
    async with running(labs) as api:
        assert await api.exec(UNIQUE, "pve1", HOME_DB) == (200, "hi\n[exit status 0]\n")
        status, body = await api.power(UNIQUE, f"home:{HOME_DB}")
        assert status == 200, body
        # A Proxmox user of the other cluster renames a guest to "db".
        labs.other.cluster.guests[OTHER_SCRATCH].name = "db"

        async def renamed() -> bool:
            return (await api.names()).count("db") == 2

        await wait_for(renamed, 10, "the rename to show in the inventory")
        before = (labs.tasks(), labs.commands())
        for node, ref, vmid in (("pve1", "home", HOME_DB), ("pve2", "other", OTHER_SCRATCH)):
            status, _ = await api.exec(UNIQUE, node, vmid)
            assert status == 403
            status, _ = await api.power(UNIQUE, f"{ref}:{vmid}")
            assert status == 403
        assert (labs.tasks(), labs.commands()) == before
    rule = f"ambiguous allowlist entry 'db' matches home:{HOME_DB}, other:{OTHER_SCRATCH}"
    assert sum(rule in r["result"] for r in audit.records) == 4
    assert len([w for w in warnings_of(caplog) if rule in w]) == 2


async def test_a_vmid_in_both_clusters_is_refused_on_both(
    labs: Labs, audit: AuditCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pxproxy.api.allowlist")
    async with running(labs) as api:
        before = (labs.tasks(), labs.commands())
        for node, ref in (("pve1", "home"), ("pve2", "other")):
            status, _ = await api.exec(BY_VMID, node, SHARED_VMID)
            assert status == 403
            status, _ = await api.power(BY_VMID, f"{ref}:{SHARED_VMID}", "start")
            assert status == 403
        assert (labs.tasks(), labs.commands()) == before
    both = f"home:{SHARED_VMID}, other:{SHARED_VMID}"
    rule = f"ambiguous allowlist entry '{SHARED_VMID}' matches {both}"
    assert [(r["action"], rule in r["result"]) for r in audit.records] == [
        ("exec", True),
        ("start", True),
        ("exec", True),
        ("start", True),
    ]
    assert len([w for w in warnings_of(caplog) if rule in w]) == 2


async def test_tail_paths_match_on_path_boundaries(labs: Labs) -> None:
    async with running(labs) as api:
        base = f"/tail/pve1/{HOME_WIKI}?follow=0&limit=1&file="
        status, text = await api.get(LOGS, base + "/var/log/syslog")
        assert status == 200, text
        before = labs.commands()
        for path in ("/var/logs-secret", "/var/log-old/syslog", "/var/log/../../etc/shadow"):
            status, text = await api.get(LOGS, base + path)
            assert status == 400, (path, text)
        status, text = await api.get(NO_PATHS, base + "/var/log/syslog")
        assert status == 400
        assert "may read no files" in text
        assert labs.commands() == before


async def test_node_tail_refusal_is_audited(labs: Labs, audit: AuditCapture) -> None:
    async with running(labs) as api:
        status, _ = await api.get(BOUND, "/tail/pve2?file=/etc/hostname&follow=0")
        assert status == 403
    assert [(r["action"], r["guest"], r["result"][:7]) for r in audit.records] == [
        ("tail", "other:node/pve2", "denied:")
    ]


async def test_check_warns_and_names_the_ambiguous_entries(labs: Labs) -> None:
    out = io.StringIO()
    code = await check(config(labs), out)
    text = out.getvalue()
    assert code == 1, text
    problems = [line for line in text.splitlines() if line.startswith("problem: ")]
    assert problems == [
        f"problem: api.tokens[1].guests[0]: 'wiki' matches 2 guests (home:{HOME_WIKI}, "
        f"other:{OTHER_WIKI}), so it allows none of them; use cluster:vmid",
        f"problem: api.tokens[4].guests[0]: '{SHARED_VMID}' matches 2 guests "
        f"(home:{SHARED_VMID}, other:{SHARED_VMID}), so it allows none of them; use cluster:vmid",
    ]
    warnings = [line for line in text.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: api.tokens[3].guests[0]: 'db' is a bare name: with 2 clusters it stops "
        "allowing anything once a second guest matches (a rename is enough); prefer "
        f"cluster:vmid; it is home:{HOME_DB} now"
    ]
