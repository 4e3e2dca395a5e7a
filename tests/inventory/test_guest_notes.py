"""The notes watcher with a fake client and a fake clock: configs are read only on the
triggers (first sight, tags, status or node changed, the refresh), notes parsed only when the
digest changed, a failed read keeps the routes, and one guest's notes never touch another's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from pxproxy.inventory.guest_notes import GuestNotes
from pxproxy.inventory.model import Guest, GuestType
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.pve.errors import PveConnectionError

from ..builders import make_guest
from ..support import wait_for

CLUSTER = "home"
REFRESH_S = 30.0


def notes(host: str, port: int = 80) -> str:
    return f"Our wiki.\n\n```yaml\npxproxy: {{host: {host}, port: {port}}}\n```\n"


class FakeConfigs:
    """Guest configs by vmid, with a digest that changes with every edit, and counters."""

    def __init__(self) -> None:
        self.descriptions: dict[int, str] = {}
        self.edits: dict[int, int] = {}
        self.reads: dict[int, int] = {}
        self.failing: set[int] = set()
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0

    def set(self, vmid: int, description: str) -> None:
        self.descriptions[vmid] = description
        self.edits[vmid] = self.edits.get(vmid, 0) + 1

    async def guest_config(self, kind: GuestType, node: str, vmid: int) -> dict[str, object]:
        self.reads[vmid] = self.reads.get(vmid, 0) + 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if vmid in self.failing:
                raise PveConnectionError("cannot reach https://pve:8006: refused")
            return {
                "hostname": f"ct{vmid}",
                "description": self.descriptions.get(vmid, ""),
                "digest": f"{vmid:08x}{self.edits.get(vmid, 0):032x}",
            }
        finally:
            self.in_flight -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tagged(vmid: int, name: str = "", **kw: object) -> Guest:
    tags = kw.pop("tags", ("pxproxy",))
    return make_guest(vmid, name or f"ct{vmid}", cluster=CLUSTER, tags=tags, **kw)  # type: ignore[arg-type]


def watcher(configs: FakeConfigs, clock: Callable[[], float], concurrency: int = 4) -> GuestNotes:
    return GuestNotes(CLUSTER, configs, refresh_s=REFRESH_S, concurrency=concurrency, clock=clock)


def hosts(w: GuestNotes) -> dict[str, list[str]]:
    return {d.guest: [h for r in d.routes for h in r.host or ()] for d in w.declared()}


async def test_routes_of_a_tagged_guest_and_no_read_of_untagged_ones() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7101, notes("wiki.example"))
    configs.set(7102, notes("git.example"))
    w = watcher(configs, clock)
    changed = await w.update([tagged(7101, "wiki"), make_guest(7102, "git", cluster=CLUSTER)])
    assert changed is True
    (declared,) = w.declared()
    assert declared.guest == "home:7101"
    assert declared.name == "wiki"
    assert declared.error is None
    assert [r.guest for r in declared.routes] == ["home:7101"]
    assert configs.reads == {7101: 1}


async def test_the_tag_is_case_insensitive_and_templates_are_skipped() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7103, notes("a.example"))
    configs.set(7104, notes("b.example"))
    w = watcher(configs, clock)
    await w.update([tagged(7103, tags=("web", "PxProxy")), tagged(7104, template=True)])
    assert hosts(w) == {"home:7103": ["a.example"]}
    assert configs.reads == {7103: 1}


async def test_reads_happen_only_on_the_triggers() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7105, notes("a.example"))
    w = watcher(configs, clock)
    guest = tagged(7105)
    await w.update([guest])
    for _ in range(50):  # fifty polls within the refresh interval: no read
        clock.now += 0.2
        assert await w.update([guest]) is False
    assert w.stats.reads == 1
    await w.update([guest._replace(status="stopped")])
    assert w.stats.reads == 2
    await w.update([guest._replace(status="stopped", tags=("pxproxy", "web"))])
    assert w.stats.reads == 3
    moved = guest._replace(status="stopped", tags=("pxproxy", "web"), node="pve2")
    await w.update([moved])
    assert w.stats.reads == 4
    await w.update([moved])
    assert w.stats.reads == 4
    clock.now += REFRESH_S * 1.25  # the spread is 0.75..1.25 of the refresh
    await w.update([moved])
    assert w.stats.reads == 5
    # The digest never changed: the notes were parsed once.
    assert w.stats.parses == 1


async def test_an_unchanged_digest_is_not_parsed_again_a_changed_one_is() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7106, notes("a.example"))
    w = watcher(configs, clock)
    guest = tagged(7106)
    await w.update([guest])
    clock.now += REFRESH_S * 1.25
    assert await w.update([guest]) is False
    assert (w.stats.reads, w.stats.parses) == (2, 1)
    configs.set(7106, notes("b.example"))
    clock.now += REFRESH_S * 1.25
    assert await w.update([guest]) is True
    assert (w.stats.reads, w.stats.parses) == (3, 2)
    assert hosts(w) == {"home:7106": ["b.example"]}


async def test_a_failed_read_keeps_the_routes_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7107, notes("a.example"))
    w = watcher(configs, clock)
    guest = tagged(7107)
    await w.update([guest])
    configs.failing.add(7107)
    caplog.set_level(logging.INFO, "pxproxy.inventory.guest_notes")
    for _ in range(3):
        clock.now += REFRESH_S * 1.25
        assert await w.update([guest]) is False
    assert w.stats.read_failures == 3
    assert hosts(w) == {"home:7107": ["a.example"]}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot read the notes of ct7107 (home:7107)" in warnings[0].getMessage()
    configs.failing.clear()
    clock.now += REFRESH_S * 1.25
    await w.update([guest])
    assert any("can be read again" in r.getMessage() for r in caplog.records)


async def test_bad_notes_are_that_guests_alone(caplog: pytest.LogCaptureFixture) -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7108, notes("a.example"))
    configs.set(7109, "```yaml\npxproxy:\n  a: &a [x, x]\n  b: [*a, *a]\n```\n")
    configs.set(7110, notes("c.example", port=99999))
    caplog.set_level(logging.INFO, "pxproxy.inventory.guest_notes")
    w = watcher(configs, clock)
    guests = [tagged(7108), tagged(7109), tagged(7110)]
    await w.update(guests)
    by_guest = {d.guest: d for d in w.declared()}
    assert [h for r in by_guest["home:7108"].routes for h in r.host or ()] == ["a.example"]
    assert by_guest["home:7109"].routes == ()
    assert by_guest["home:7109"].error == "line 3: YAML anchors (&a) are not allowed in notes"
    assert by_guest["home:7110"].error == "pxproxy.port: must be at most 65535"
    # Re-reading the same bad notes logs nothing more: one WARNING per guest.
    for _ in range(3):
        clock.now += REFRESH_S * 1.25
        await w.update(guests)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("ct7109 (home:7109) are invalid" in m for m in warnings)


async def test_untagged_and_vanished_guests_lose_their_routes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7111, notes("a.example"))
    configs.set(7112, notes("b.example"))
    w = watcher(configs, clock)
    a, b = tagged(7111), tagged(7112)
    await w.update([a, b])
    caplog.set_level(logging.INFO, "pxproxy.inventory.guest_notes")
    assert await w.update([a._replace(tags=()), b]) is True
    assert hosts(w) == {"home:7112": ["b.example"]}
    assert await w.update([]) is True
    assert w.declared() == ()
    assert sum("no longer tagged" in r.getMessage() for r in caplog.records) == 2


async def test_a_guest_of_an_offline_node_is_not_read_and_keeps_its_routes() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7113, notes("a.example"))
    w = watcher(configs, clock)
    guest = tagged(7113)
    await w.update([guest])
    clock.now += REFRESH_S * 2
    await w.update([guest._replace(status="unknown")])
    assert w.stats.reads == 1
    assert hosts(w) == {"home:7113": ["a.example"]}


async def test_a_rename_changes_the_name_without_a_read() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7114, notes("a.example"))
    w = watcher(configs, clock)
    await w.update([tagged(7114, "old")])
    assert await w.update([tagged(7114, "new")]) is True
    assert w.declared()[0].name == "new"
    assert w.stats.reads == 1


async def test_reads_are_bounded_in_concurrency() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.gate = asyncio.Event()
    w = watcher(configs, clock, concurrency=3)
    guests = [tagged(7120 + i) for i in range(10)]
    for g in guests:
        configs.set(g.vmid, notes(f"h{g.vmid}.example"))
    update = asyncio.create_task(w.update(guests))
    await wait_for(lambda: configs.in_flight == 3, what="three reads in flight")
    for _ in range(20):  # every other read had its chance to start: none did
        await asyncio.sleep(0)
    assert configs.in_flight == 3
    configs.gate.set()
    assert await update is True
    assert configs.most_in_flight == 3
    assert len(w.declared()) == 10


async def test_run_follows_snapshots_and_calls_on_change() -> None:
    configs, clock = FakeConfigs(), Clock()
    configs.set(7131, notes("a.example"))
    w = watcher(configs, clock)
    inventory = Inventory()
    changes: list[int] = []
    changed = asyncio.Event()

    def on_change() -> None:
        changes.append(len(w.declared()))
        changed.set()

    task = asyncio.create_task(w.run(inventory, on_change))
    try:
        guest = tagged(7131)
        inventory.publish(ClusterSnapshot.build(CLUSTER, [guest], []))
        await asyncio.wait_for(changed.wait(), 5)
        assert changes == [1]
        changed.clear()
        # A failed poll (stale data, here none) keeps everything: no read, no change.
        inventory.publish(ClusterSnapshot.build(CLUSTER, [], []).failed("timeout"))
        await wait_for(lambda: w.stats.snapshots == 2, what="the failed snapshot followed")
        assert hosts(w) == {"home:7131": ["a.example"]}
        inventory.publish(ClusterSnapshot.build(CLUSTER, [], []))
        await asyncio.wait_for(changed.wait(), 5)
        assert changes == [1, 0]
        assert w.stats.reads == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
