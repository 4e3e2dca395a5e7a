"""The real `dig` (Debian dnsutils) against the responder, over UDP and TCP: A, AAAA, SRV, PTR,
REFUSED and NXDOMAIN, and a parked guest's answers. dig must be installed: no skip."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator

import pytest

from pxproxy.dns.server import DnsResponder
from pxproxy.wake.contract import WakeState

from .zone_fixtures import FakeSource, settings, wiki_and_friends

DIG = shutil.which("dig") or "dig"  # missing: the test fails loudly when it runs it
TRANSPORTS = ["+notcp", "+tcp"]


@pytest.fixture
async def source() -> FakeSource:
    return wiki_and_friends()


@pytest.fixture
async def responder(source: FakeSource) -> AsyncIterator[DnsResponder]:
    server = DnsResponder(settings(), source)
    await server.start()
    yield server
    await server.close()


async def dig(server: DnsResponder, *args: str, host: str = "127.0.0.1") -> str:
    proc = await asyncio.create_subprocess_exec(
        DIG,
        f"@{host}",
        "-p",
        str(server.port),
        "+time=5",
        "+tries=1",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode() + out.decode()
    return out.decode()


async def short(server: DnsResponder, *args: str) -> list[str]:
    return (await dig(server, "+short", *args)).split()


def status(output: str) -> str:
    found = re.search(r"status: (\w+)", output)
    assert found, output
    return found.group(1)


def flags(output: str) -> set[str]:
    found = re.search(r";; flags: ([a-z ]+);", output)
    assert found, output
    return set(found.group(1).split())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_addresses(responder: DnsResponder, transport: str) -> None:
    assert await short(responder, transport, "wiki.pve.internal", "A") == ["10.0.0.5"]
    assert await short(responder, transport, "wiki.pve.internal", "AAAA") == ["fd00::5"]
    assert await short(responder, transport, "docs.pve.internal") == ["10.0.0.5"]
    assert await short(responder, transport, "git.pve.internal") == ["10.0.0.6"]  # a route host
    full = await dig(responder, transport, "Wiki.PVE.internal")
    assert status(full) == "NOERROR"
    assert flags(full) >= {"qr", "aa"}
    assert "ra" not in flags(full)
    assert re.search(r"^Wiki\.PVE\.internal\.\s+2\s+IN\s+A\s+10\.0\.0\.5$", full, re.M), full


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_srv_and_ptr(responder: DnsResponder, transport: str) -> None:
    srv = await dig(responder, transport, "_8080._tcp.wiki.pve.internal", "SRV")
    assert re.search(r"IN\s+SRV\s+0 1 8080 wiki\.pve\.internal\.$", srv, re.M), srv
    assert re.search(r"^wiki\.pve\.internal\.\s+2\s+IN\s+A\s+10\.0\.0\.5$", srv, re.M), srv
    assert await short(responder, transport, "-x", "10.0.0.5") == ["wiki.pve.internal."]
    assert await short(responder, transport, "-x", "fd00::5") == ["wiki.pve.internal."]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_refused_and_nxdomain(responder: DnsResponder, transport: str) -> None:
    outside = await dig(responder, transport, "example.com")
    assert status(outside) == "REFUSED"
    assert "aa" not in flags(outside)
    assert status(await dig(responder, transport, "-x", "192.0.2.1")) == "REFUSED"
    missing = await dig(responder, transport, "nope.pve.internal")
    assert status(missing) == "NXDOMAIN"
    assert re.search(r"pve\.internal\.\s+2\s+IN\s+SOA\s+ns\.pve\.internal\.", missing), missing
    # Recursion desired or not, nothing outside the zone is looked up.
    assert status(await dig(responder, transport, "+recurse", "example.org")) == "REFUSED"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_parked_guest_answers_pxproxy(
    responder: DnsResponder, source: FakeSource, transport: str
) -> None:
    source.states["wiki"] = WakeState.ASLEEP
    source.states["mc"] = WakeState.ASLEEP
    assert await short(responder, transport, "wiki.pve.internal") == ["127.0.0.1"]
    assert await short(responder, transport, "_80._tcp.wiki.pve.internal", "SRV") == [
        "0",
        "1",
        "8080",
        "wiki.pve.internal.",
    ]
    assert await short(responder, transport, "_25565._tcp.mc.pve.internal", "SRV") == [
        "0",
        "1",
        "35565",
        "mc.pve.internal.",
    ]
    assert await short(responder, transport, "db.pve.internal") == ["10.0.0.6"]  # not idle
    source.states["wiki"] = WakeState.READY
    assert await short(responder, transport, "wiki.pve.internal") == ["10.0.0.5"]


async def test_over_ipv6() -> None:
    server = DnsResponder(settings(listen="[::1]:0"), wiki_and_friends())
    await server.start()
    try:
        for transport in TRANSPORTS:
            got = await dig(server, "+short", transport, "wiki.pve.internal", "AAAA", host="::1")
            assert got.split() == ["fd00::5"]
    finally:
        await server.close()
