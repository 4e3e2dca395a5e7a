"""`pxproxy check` reads guests' notes as the daemon would: their routes are listed with the
guest that declares them, and unusable notes are warnings naming the guest."""

from __future__ import annotations

import io

from pxproxy.check import check
from pxproxy.config.models import Config
from pxproxy.lab.server import LabServer

from .support import lab_cluster

# Used by no other test (the lab derives guest addresses from vmids).
DOCS, BROKEN = 9611, 9612


async def test_check_lists_declared_routes_and_warns_about_bad_notes(
    lab_server: LabServer,
) -> None:
    cluster = lab_server.cluster
    cluster.add_guest(DOCS, "lxc", "docs", "pve1", status="running", tags="pxproxy")
    cluster.add_guest(BROKEN, "lxc", "broken", "pve1", status="running", tags="pxproxy")
    cluster.guests[DOCS].description = "```yaml\npxproxy: {host: docs.test, port: 8080}\n```\n"
    cluster.guests[BROKEN].description = "```yaml\npxproxy: {host: x.test, port: http}\n```\n"
    await cluster.open()
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "routes": [{"host": "wiki.test", "guest": "docs", "port": 8080}],
        }
    )
    out = io.StringIO()
    assert await check(config, out) == 0  # bad notes cost their guest its routes only
    text = out.getvalue()
    assert "route wiki.test -> docs:8080\n" in text
    assert "route docs.test -> " in text
    assert f":{DOCS}:8080 (notes of docs)" in text
    warning = next(line for line in text.splitlines() if "notes of broken" in line)
    assert warning.startswith("warning: ")
    assert "port" in warning
