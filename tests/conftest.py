from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakepve.certs import make_cert

from pxproxy.lab.certs import LabCertificate, make_certificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from .fakes import TestPve
from .peers import FakePvePeer, LabPeer, Peer
from .support import HOST, Pki


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test (and every daemon it starts as a subprocess) gets its own default state
    directory: no test reads what another left in ~/.local/state or /var/lib/pxproxy."""
    home = tmp_path / "state-home"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    monkeypatch.setattr("pxproxy.state.opening.SYSTEM_STATE_DIR", tmp_path / "no-system-state")
    return home / "pxproxy"


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


@pytest.fixture(scope="session")
def lab_certificate() -> LabCertificate:
    """One certificate for every lab in the session: making a key per test is slow."""
    return make_certificate((HOST,))


@pytest.fixture
async def lab_server(lab_certificate: LabCertificate) -> AsyncIterator[LabServer]:
    """An empty lab (node pve1, no guests) serving on a free port; add guests and faults."""
    cluster = LabCluster()
    cluster.add_node("pve1")
    server = LabServer(cluster, host=HOST, port=0, certificate=lab_certificate)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(params=["fakepve", "lab"])
async def peer(
    request: pytest.FixtureRequest, pki: Pki, lab_certificate: LabCertificate
) -> AsyncIterator[Peer]:
    """Each Proxmox peer in turn, empty but for node pve1."""
    if request.param == "lab":
        cluster = LabCluster()
        cluster.add_node("pve1")
        server = LabServer(cluster, host=HOST, port=0, certificate=lab_certificate)
        await server.start()
        try:
            yield LabPeer(server)
        finally:
            await server.stop()
        return
    fake = TestPve(user="root@pam", password="secret", host=HOST, port=0)
    fake.time_scale = 0
    await fake.start(pki.certfile, pki.keyfile)
    try:
        yield FakePvePeer(fake, pki.fingerprint)
    finally:
        await fake.stop()
