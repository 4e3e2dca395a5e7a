from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fakepve.certs import make_cert

from .fakes import TestPve
from .peers import FakePvePeer, Peer
from .support import HOST, Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    certfile, keyfile, der = make_cert(str(tmp_path_factory.mktemp("pki")), hosts=(HOST,))
    return Pki(certfile, keyfile, der)


@pytest.fixture
async def pve(pki: Pki) -> AsyncIterator[TestPve]:
    """A fakepve served in the test's own event loop (root@pam / secret, tasks instant)."""
    fake = TestPve(user="root@pam", password="secret", host=HOST, port=0)
    fake.time_scale = 0
    await fake.start(pki.certfile, pki.keyfile)
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture(params=["fakepve"])
async def peer(request: pytest.FixtureRequest, pki: Pki) -> AsyncIterator[Peer]:
    """Each Proxmox peer in turn, empty but for node pve1."""
    fake = TestPve(user="root@pam", password="secret", host=HOST, port=0)
    fake.time_scale = 0
    await fake.start(pki.certfile, pki.keyfile)
    try:
        yield FakePvePeer(fake, pki.fingerprint)
    finally:
        await fake.stop()
