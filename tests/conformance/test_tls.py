"""TLS: fingerprint pinning really checks the peer certificate; CA files and defaults verify."""

from __future__ import annotations

import pytest

from pxproxy.pve.client import PveClient
from pxproxy.pve.errors import PveTlsError

from ..fakes import TestPve
from ..support import Pki, cluster_config


async def test_right_fingerprint_accepted(pve: TestPve, pki: Pki) -> None:
    async with PveClient(cluster_config(pve, pki)) as client:
        assert (await client.version())["version"]


async def test_wrong_fingerprint_refused_before_credentials_are_sent(
    pve: TestPve, pki: Pki
) -> None:
    wrong = "AB:" * 31 + "AB"
    async with PveClient(cluster_config(pve, pki, tls={"fingerprint": wrong})) as client:
        with pytest.raises(PveTlsError, match="fingerprint mismatch"):
            await client.version()
    # The password login never reached the server.
    assert pve.count("/access/ticket", "POST") == 0


async def test_fingerprint_case_and_colons_do_not_matter(pve: TestPve, pki: Pki) -> None:
    bare = pki.fingerprint.replace(":", "").lower()
    async with PveClient(cluster_config(pve, pki, tls={"fingerprint": bare})) as client:
        assert (await client.version())["version"]


async def test_ca_file_verifies(pve: TestPve, pki: Pki) -> None:
    tls = {"verify": True, "ca_file": pki.certfile}
    async with PveClient(cluster_config(pve, pki, tls=tls)) as client:
        assert (await client.version())["version"]


async def test_self_signed_refused_by_default(pve: TestPve, pki: Pki) -> None:
    async with PveClient(cluster_config(pve, pki, tls={})) as client:
        with pytest.raises(PveTlsError):
            await client.version()


async def test_verify_off_accepts_anything(pve: TestPve, pki: Pki) -> None:
    async with PveClient(cluster_config(pve, pki, tls={"verify": False})) as client:
        assert (await client.version())["version"]
