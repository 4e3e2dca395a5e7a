"""/journal/{node} against the lab: backlog, follow with cursors, service filter, disconnect."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

import pytest
from pytest_aiohttp import AiohttpClient

from pxproxy.lab.journal import format_line
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import PveParameterError
from pxproxy.pve.models import JournalPage
from pxproxy.streams.node_journal import JournalReader, ServiceNameError, validate_service

from ..support import wait_for
from .test_stats import AUTH, api, read_lines

JOURNAL_LINE = re.compile(r"^[A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d pve1 [^\s\[:]+(\[\d+\])?: .*$")


def journal_calls(lab: LabServer) -> int:
    return lab.api.count("/nodes/pve1/journal")


async def quiet(lab: LabServer) -> None:
    """No random lines from the lab's ticker: the tests append what they expect."""
    await lab.journals.ticker.stop()


async def test_backlog_limit_then_end(lab_server: LabServer, aiohttp_client: AiohttpClient) -> None:
    await quiet(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        journal = lab_server.journals.node("pve1")
        resp = await a.http.get("/journal/pve1?limit=5&follow=0", headers=AUTH)
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        lines = (await resp.text()).splitlines()
        assert lines == [format_line(e) for e in journal.entries(5)]
        assert all(JOURNAL_LINE.match(x) for x in lines)
        resp = await a.http.get("/journal/pve1?follow=0", headers=AUTH)
        assert len((await resp.text()).splitlines()) == 100  # the default limit
        resp = await a.http.get("/journal/pve1?follow=0&limit=1000", headers=AUTH)
        assert len((await resp.text()).splitlines()) == len(journal)  # all 200 there are


async def test_follow_delivers_new_lines(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    await quiet(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        journal = lab_server.journals.node("pve1")
        resp = await a.http.get("/journal/pve1?limit=2", headers=AUTH)
        assert resp.status == 200
        assert await read_lines(resp, 2) == [format_line(e) for e in journal.entries(2)]
        first = journal.append("pxtest", "hello follow 1", unit="pxtest.service", pid=42)
        assert await read_lines(resp, 1) == [format_line(first)]
        more = [journal.append("pxtest", f"burst {i}", unit="pxtest.service") for i in range(3)]
        assert await read_lines(resp, 3) == [format_line(e) for e in more]
        resp.close()


async def test_service_filter(lab_server: LabServer, aiohttp_client: AiohttpClient) -> None:
    await quiet(lab_server)
    async with api(lab_server, aiohttp_client) as a:
        journal = lab_server.journals.node("pve1")
        mine = [journal.append("pxtest", f"m{i}", unit="pxtest.service", pid=7) for i in range(3)]
        journal.generate(5)  # other services' lines after them
        resp = await a.http.get(
            "/journal/pve1?service=pxtest.service&limit=10&follow=0", headers=AUTH
        )
        assert resp.status == 200
        assert (await resp.text()).splitlines() == [format_line(e) for e in mine]
        # Repeated: either unit; following keeps the filter.
        resp = await a.http.get(
            "/journal/pve1?service=pxtest&service=other.service&limit=1", headers=AUTH
        )
        assert await read_lines(resp, 1) == [format_line(mine[-1])]
        journal.append("noise", "not for us", unit="noise.service")
        wanted = journal.append("other", "for us", unit="other.service")
        assert await read_lines(resp, 1) == [format_line(wanted)]
        resp.close()


async def test_disconnect_stops_upstream_polling(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/journal/pve1?limit=1", headers=AUTH)
        await read_lines(resp, 1)
        before = journal_calls(lab_server)
        await wait_for(lambda: journal_calls(lab_server) >= before + 2, 10, "follow polling")
        resp.close()
        # The follow loop runs in the handler itself: once the handler has ended (the API counts
        # the request), nothing is left that could ask Proxmox again.
        await wait_for(lambda: a.ended("/journal/{node}") == 1, 10, "the handler to end")
        settled = journal_calls(lab_server)
        assert settled >= before + 2


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=1.5", "limit"),
        ("limit=%2B5", "limit"),
        ("follow=maybe", "follow"),
        ("service=a%3Bb", "';'"),
        ("service=a%0Ab", "'\\n'"),
        ("service=a%20b", "' '"),
        ("service=a%24(id)", "'$'"),
        ("service=..%2Fetc", "'/'"),
        ("service=-x", "'-'"),
        ("service=", "empty"),
        ("service=%E2%80%A8", "U+2028"),
        ("lines=5", "lines"),
    ],
)
async def test_bad_queries_are_400_and_reach_nothing(
    lab_server: LabServer, aiohttp_client: AiohttpClient, query: str, needle: str
) -> None:
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get(f"/journal/pve1?{query}", headers=AUTH)
        assert resp.status == 400
        body = await resp.json()
        assert needle in body["detail"], body
        assert journal_calls(lab_server) == 0


async def test_unknown_and_offline_nodes(
    lab_server: LabServer, aiohttp_client: AiohttpClient
) -> None:
    async with api(lab_server, aiohttp_client) as a:
        resp = await a.http.get("/journal/nosuch", headers=AUTH)
        assert resp.status == 404
        assert "nosuch" in (await resp.json())["detail"]
        resp = await a.http.get("/journal/pve1?follow=0")
        assert resp.status == 401
        lab_server.set_node_offline("pve1")
        resp = await a.http.get("/journal/pve1", headers=AUTH)
        assert resp.status == 503
        assert "pve1" in (await resp.json())["detail"]


def test_validate_service() -> None:
    for good in ("pveproxy", "pveproxy.service", "getty@tty1.service", "sys-fs.mount", "a:b_c"):
        assert validate_service(good) == good
    for bad in ("a b", "a\x00", "a\x1b[31m", "-h", ".hidden", "x" * 300, "ünit", "a\\x2d"):
        with pytest.raises(ServiceNameError):
            validate_service(bad)


class OldPve:
    """A PVE 8 journal endpoint: no `service` parameter (400), cursors as usual."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.services: list[tuple[str, ...]] = []

    async def node_journal(
        self,
        node: str,
        *,
        lastentries: int | None = None,
        startcursor: str | None = None,
        services: Sequence[str] = (),
    ) -> JournalPage:
        self.services.append(tuple(services))
        if services:
            raise PveParameterError(
                "Parameter verification failed.",
                errors={
                    "service": "property is not defined in schema and the schema does not "
                    "allow additional properties"
                },
            )
        if startcursor is not None:
            return JournalPage("c2", (), "c2")
        assert lastentries is not None
        return JournalPage("c0", tuple(self.lines[-lastentries:]), "c1")


async def test_service_filter_falls_back_to_identifiers_before_pve9() -> None:
    lines = [
        "Nov 23 01:02:03 pve1 pveproxy[12]: a",
        "Nov 23 01:02:04 pve1 sshd[13]: b",
        "Nov 23 01:02:05 pve1 pveproxy[12]: c",
        "Nov 23 01:02:06 pve1 kernel: d",
    ]
    old = OldPve(lines)
    reader = JournalReader(cast(PveClient, old), "pve1", ["pveproxy.service"])
    assert await reader.backlog(1) == [lines[2]]
    assert reader.cursor == "c1"
    assert await reader.poll() == []
    assert reader.cursor == "c2"
    # One refused native call, then filtering here without the parameter.
    assert old.services == [("pveproxy.service",), (), ()]
