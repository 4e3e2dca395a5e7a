"""Ticket and token auth against fakepve: login, renewal, re-login after 401, CSRF."""

from __future__ import annotations

import pytest

from pxproxy.pve.client import TICKET_RENEW_AFTER_S, PveClient
from pxproxy.pve.errors import PveAuthError

from ..fakes import TestPve
from ..support import Pki, cluster_config, token_config


async def test_ticket_login_then_cookie(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    async with PveClient(cluster_config(pve, pki)) as client:
        body = await client.cluster_resources_raw()
        await client.cluster_resources_raw()
    assert b'"lxc/101"' in body
    # One login serves both calls.
    assert pve.count("/access/ticket", "POST") == 1


async def test_token_auth_never_logs_in(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    async with PveClient(token_config(pve, pki)) as client:
        version = await client.version()
        upid = await client.guest_action("lxc", "pve1", 101, "stop")
    assert version["version"].startswith("9.")
    assert upid.startswith("UPID:pve1:")
    assert pve.count("/access/ticket", "POST") == 0
    assert pve.ct(101).status == "stopped"


async def test_wrong_token_is_auth_error(pve: TestPve, pki: Pki) -> None:
    cfg = token_config(pve, pki)
    pve.apitokens["pxproxy@pve!daemon"] = "another-secret"
    async with PveClient(cfg) as client:
        with pytest.raises(PveAuthError) as info:
            await client.version()
    assert info.value.status == 401


async def test_wrong_password_is_auth_error(pve: TestPve, pki: Pki) -> None:
    async with PveClient(cluster_config(pve, pki, password="wrong")) as client:
        with pytest.raises(PveAuthError, match="authentication failure"):
            await client.version()


async def test_expired_ticket_is_reobtained_and_request_retried(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="running")
    async with PveClient(cluster_config(pve, pki)) as client:
        await client.version()
        pve.revoke_tickets()  # as if the ticket expired on the server
        version = await client.version()
    assert version["version"]
    assert pve.count("/access/ticket", "POST") == 2


async def test_short_lived_tickets_expire_and_recover(pve: TestPve, pki: Pki) -> None:
    pve.ticket_ttl = -1  # every ticket is already expired when used
    async with PveClient(cluster_config(pve, pki)) as client:
        with pytest.raises(PveAuthError):
            await client.version()
    # Exactly one retry: login, call, re-login, call.
    assert pve.count("/access/ticket", "POST") == 2
    assert pve.count("/version") == 2


async def test_ticket_renewed_before_expiry_with_ticket_as_password(pve: TestPve, pki: Pki) -> None:
    now = [1000.0]
    async with PveClient(cluster_config(pve, pki), clock=lambda: now[0]) as client:
        await client.version()
        first = client._ticket
        now[0] += TICKET_RENEW_AFTER_S + 1
        await client.version()
        renewed = client._ticket
    assert first is not None
    assert renewed is not None
    assert renewed.ticket != first.ticket
    assert pve.count("/access/ticket", "POST") == 2
    assert renewed.ticket in pve.tickets


async def test_renewal_refused_falls_back_to_password(pve: TestPve, pki: Pki) -> None:
    now = [1000.0]
    async with PveClient(cluster_config(pve, pki), clock=lambda: now[0]) as client:
        await client.version()
        pve.revoke_tickets()
        now[0] += TICKET_RENEW_AFTER_S + 1
        version = await client.version()
    assert version["version"]
    # renewal with the revoked ticket (refused), then a password login
    assert pve.count("/access/ticket", "POST") == 3


async def test_writes_with_ticket_send_csrf(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="stopped")
    async with PveClient(cluster_config(pve, pki)) as client:
        upid = await client.guest_action("lxc", "pve1", 101, "start")
        status = await client.wait_task(upid, timeout_s=5)
    assert status.ok
    assert pve.ct(101).status == "running"


async def test_bad_csrf_is_refused_then_recovered_by_relogin(pve: TestPve, pki: Pki) -> None:
    pve.add_ct(101, "wiki", status="stopped")
    async with PveClient(cluster_config(pve, pki)) as client:
        await client.version()
        assert client._ticket is not None
        client._ticket.csrf = "forged"
        upid = await client.guest_action("lxc", "pve1", 101, "start")
    assert upid.startswith("UPID:")
    starts = [p for m, p, _ in pve.requests if m == "POST" and p.endswith("/status/start")]
    # The forged token was refused (401), the ticket re-obtained, the start retried once.
    assert len(starts) == 2
    assert pve.ct(101).status == "running"
