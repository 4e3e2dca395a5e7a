"""`pxproxy check` on `proxy.workers`: more processes than cores is a warning, since they
only take turns on the same cores."""

from __future__ import annotations

import io

from pxproxy.check import check, workers_warnings
from pxproxy.config.models import Config
from pxproxy.lab.server import LabServer

from .support import lab_cluster


def test_workers_up_to_the_cores_are_fine_and_more_are_a_warning() -> None:
    assert workers_warnings(1, 1) == []
    assert workers_warnings(2, 2) == []
    assert workers_warnings(2, None) == []  # cores unknown: nothing to say
    [warning] = workers_warnings(3, 2)
    assert warning.startswith("proxy.workers is 3 on a machine with 2 cores")


async def test_check_warns_about_more_workers_than_cores(lab_server: LabServer) -> None:
    config = Config.model_validate({"proxmox": [lab_cluster(lab_server)], "proxy": {"workers": 64}})
    out = io.StringIO()
    assert await check(config, out) == 0
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("warning: ")]
    assert any("proxy.workers is 64" in w for w in warnings), out.getvalue()
