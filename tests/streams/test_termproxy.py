"""The termproxy one-command client: output filtering, the limiter, and sessions in the lab."""

from __future__ import annotations

import asyncio

import pytest

from pxproxy.config.models import ClusterConfig
from pxproxy.lab.server import LabServer
from pxproxy.pve.client import PveClient
from pxproxy.pve.termproxy import (
    Markers,
    OutputFilter,
    ShellBusyError,
    ShellPool,
    ShellTimeoutError,
    ShellUnavailableError,
    TermproxyConnector,
    marker_command,
)

from ..support import wait_for

MARKERS = Markers("abc123")
TRANSCRIPT = (
    b"Linux pve1 6.14\r\nLast login: today\r\n"
    b"\x1b[?2004h\x1b[01;32mroot@pve1\x1b[00m:~# "
    + marker_command("echo hi", MARKERS).encode()
    + b"\r\n\x1b[?2004l\rPXS_abc123\r\n"
    b"hi \x1b[31mred\x1b[0m\r\nPXE_abc12 lookalike\r\n"
    b"PXE_abc123_7\r\n\x1b[?2004h\x1b[01;32mroot@pve1\x1b[00m:~# "
)


def run_filter(chunks: list[bytes]) -> tuple[bytes, int | None]:
    filt = OutputFilter(MARKERS)
    out = b"".join(filt.feed(c) for c in chunks)
    return out, filt.exit_status


def test_filter_strips_motd_prompt_echo_and_ansi() -> None:
    assert run_filter([TRANSCRIPT]) == (b"hi red\nPXE_abc12 lookalike\n", 7)


def test_filter_handles_every_split_point() -> None:
    # Byte by byte: markers, CRLF and escape sequences all cut in the middle.
    assert run_filter([TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))]) == (
        b"hi red\nPXE_abc12 lookalike\n",
        7,
    )


def test_echoed_line_never_matches_the_markers() -> None:
    line = marker_command("printf x", MARKERS).encode()
    assert MARKERS.start not in line
    assert MARKERS.end not in line


def test_output_is_released_as_it_arrives() -> None:
    filt = OutputFilter(MARKERS)
    assert filt.feed(b"echo...\r\nPXS_abc123\r\nfirst line\r\n") == b"first line\n"
    assert filt.feed(b"PXE_abc") == b""  # might be the end marker: held
    assert filt.feed(b"xyz\r\n") == b"PXE_abcxyz\n"
    assert filt.feed(b"PXE_abc123_0\r\n") == b""
    assert filt.exit_status == 0


async def test_pool_limits_and_times_out() -> None:
    pool = ShellPool(2, wait_s=0.05)
    async with pool.slot(), pool.slot():
        assert pool.in_use == 2
        with pytest.raises(ShellBusyError):
            async with pool.slot():
                pass
    assert pool.in_use == 0
    assert pool.peak == 2


def connector_for(
    lab: LabServer, *, keepalive_s: float = 30.0
) -> tuple[PveClient, TermproxyConnector]:
    cfg = ClusterConfig.model_validate(
        {
            "url": lab.url,
            "username": "root@pam",
            "password": lab.credentials.root_password,
            "tls": {"fingerprint": lab.fingerprint},
        }
    )
    client = PveClient(cfg)
    return client, TermproxyConnector(cfg, client, keepalive_s=keepalive_s)


async def test_run_in_the_lab_with_keepalives(lab_server: LabServer) -> None:
    client, connector = connector_for(lab_server, keepalive_s=0.05)
    chunks: list[bytes] = []

    async def sink(data: bytes) -> None:
        chunks.append(data)

    try:
        status = await connector.run(
            "pve1", "sleep 0.3; printf '%s\\n' done; false", sink, timeout_s=5
        )
    finally:
        await connector.close()
        await client.close()
    assert (b"".join(chunks), status) == (b"done\n", 1)
    assert lab_server.consoles.open_sessions == 0


async def test_run_timeout_closes_the_session(lab_server: LabServer) -> None:
    client, connector = connector_for(lab_server)

    async def sink(data: bytes) -> None:
        pass

    try:
        with pytest.raises(ShellTimeoutError):
            await connector.run("pve1", "sleep 30", sink, timeout_s=0.3)
    finally:
        await connector.close()
        await client.close()
    await wait_for(lambda: lab_server.consoles.open_sessions == 0, 5, "the shell to close")


async def test_cancelled_run_closes_the_session(lab_server: LabServer) -> None:
    client, connector = connector_for(lab_server)

    async def sink(data: bytes) -> None:
        pass

    task = asyncio.create_task(connector.run("pve1", "sleep 30", sink, timeout_s=None))
    try:
        await wait_for(lambda: lab_server.consoles.open_sessions == 1, 5, "the shell to open")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await connector.close()
        await client.close()
    await wait_for(lambda: lab_server.consoles.open_sessions == 0, 5, "the shell to close")


async def test_token_only_cannot_open_shells(lab_server: LabServer) -> None:
    cfg = ClusterConfig.model_validate(
        {
            "url": lab_server.url,
            "token_id": lab_server.credentials.token_id,
            "secret": lab_server.credentials.token_secret,
            "tls": {"fingerprint": lab_server.fingerprint},
        }
    )
    async with PveClient(cfg) as client:
        connector = TermproxyConnector(cfg, client)

        async def sink(data: bytes) -> None:
            pass

        with pytest.raises(ShellUnavailableError, match="root@pam password ticket"):
            await connector.run("pve1", "true", sink, timeout_s=1)
    assert lab_server.consoles.sessions_opened == 0
