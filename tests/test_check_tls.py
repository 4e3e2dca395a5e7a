"""`pxproxy check` loads `proxy.tls` as the listener would: one line per certificate with
what it covers and until when; an expired one is a warning, not a problem."""

from __future__ import annotations

import io
from pathlib import Path

from pxproxy.check import check
from pxproxy.config.models import Config
from pxproxy.lab.server import LabServer

from .certificates import DAY, NOW, TestCa
from .support import lab_cluster


async def test_check_lists_the_certificates_and_warns_about_an_expired_one(
    lab_server: LabServer, tmp_path: Path
) -> None:
    ca = TestCa()
    site = ca.issue("wiki.t.test", "*.apps.t.test").write(tmp_path, "site")
    old = ca.issue("old.t.test", not_before=NOW - 9 * DAY, not_after=NOW - 2 * DAY).write(
        tmp_path, "old"
    )
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "proxy": {"tls": {"certificates": [site.model_dump(), old.model_dump()]}},
        }
    )
    out = io.StringIO()
    assert await check(config, out) == 0
    lines = out.getvalue().splitlines()
    assert f"tls {site.cert} (default): wiki.t.test, *.apps.t.test; until " in "\n".join(lines)
    assert any(line.startswith(f"tls {old.cert}: old.t.test; until ") for line in lines)
    [warning] = [line for line in lines if line.startswith("warning: ")]
    assert warning.startswith(f"warning: proxy.tls.certificates[1].cert: {old.cert} expired on ")


def remove(path: str) -> None:
    Path(path).unlink()


async def test_check_reports_certificates_gone_since_validation(
    lab_server: LabServer, tmp_path: Path
) -> None:
    site = TestCa().issue("wiki.t.test").write(tmp_path, "site")
    config = Config.model_validate(
        {
            "proxmox": [lab_cluster(lab_server)],
            "proxy": {"tls": {"certificates": [site.model_dump()]}},
        }
    )
    remove(site.key)  # a renewal half done, say
    out = io.StringIO()
    assert await check(config, out) == 1
    assert out.getvalue().splitlines()[-1] == (
        f"problem: proxy.tls.certificates[0].key: cannot read {site.key}: No such file or directory"
    )
