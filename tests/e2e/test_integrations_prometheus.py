"""The real Prometheus (Debian) discovers the lab's guests through `http_sd_configs` with a
bearer token: its /api/v1/targets shows one target per guest address and per route port, with
the `__meta_pve_*` labels (as discovered, and relabelled into a kept label), filters applied."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pxproxy.lab.server import LabServer
from pxproxy.lab.state import guest_ip

from ..support import wait_for
from .integrations_stack import READ_TOKEN, Stack, daemon_with_lab
from .real_proxies import free_port

pytestmark = pytest.mark.slow

WEB = 9850  # running LXC, tags prom + web, a route on 8080
VM = 9851  # running QEMU: left out by ?type=lxc
OFF = 9852  # stopped LXC, static address (even vmid): its address is still a target
START_TIMEOUT_S = 30.0


def prometheus_config(stack: Stack) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "pve",
                "http_sd_configs": [
                    {
                        "url": f"{stack.api}/integrations/prometheus-sd?type=lxc",
                        "refresh_interval": "1s",
                        "authorization": {"type": "Bearer", "credentials": READ_TOKEN},
                    }
                ],
                # Keep the guest's name and tags on the scraped series, as users would.
                "relabel_configs": [
                    {"source_labels": ["__meta_pve_name"], "target_label": "guest"},
                    {"source_labels": ["__meta_pve_tags"], "target_label": "pve_tags"},
                ],
            }
        ],
    }


def write_config(config: dict[str, Any], workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def running_prometheus(config: dict[str, Any], workdir: Path) -> AsyncIterator[str]:
    """Prometheus with `config`; yields its base URL once /-/ready answers."""
    exe = shutil.which("prometheus")
    assert exe is not None, "prometheus is not installed (Debian prometheus; scripts/test)"
    path = write_config(config, workdir)
    port = free_port()
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            exe,
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ready() -> bool:
                assert proc.returncode is None, log_path.read_text(errors="replace")
                try:
                    async with http.get(url + "/-/ready") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, START_TIMEOUT_S, "Prometheus to be ready")
        yield url
    except BaseException:
        print(log_path.read_text(errors="replace"))
        raise
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_prometheus_discovers_guests_with_pve_sd_labels(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab = lab_server
    lab.cluster.add_guest(WEB, "lxc", "prom-web", "pve1", status="running", tags=["prom", "web"])
    lab.cluster.add_guest(VM, "qemu", "prom-vm", "pve1", status="running", agent=True)
    lab.cluster.add_guest(OFF, "lxc", "prom-off", "pve1")
    routes = [{"host": "web.prom.test", "guest": "prom-web", "port": 8080}]
    web, off = guest_ip(WEB), guest_ip(OFF)
    expected = {web, f"{web}:8080", off}
    async with (
        daemon_with_lab(lab, tmp_path, routes=routes) as stack,
        running_prometheus(prometheus_config(stack), tmp_path / "prometheus") as prometheus,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
    ):
        targets: list[dict[str, Any]] = []

        async def discovered() -> bool:
            nonlocal targets
            async with http.get(prometheus + "/api/v1/targets") as resp:
                body = await resp.json()
            targets = body["data"]["activeTargets"]
            return {t["discoveredLabels"]["__address__"] for t in targets} == expected

        await wait_for(discovered, 30, "Prometheus to show the guests' targets")
        by_address = {t["discoveredLabels"]["__address__"]: t for t in targets}
        labels = by_address[f"{web}:8080"]["discoveredLabels"]
        assert {k: v for k, v in labels.items() if k.startswith("__meta_pve_")} == {
            "__meta_pve_vmid": str(WEB),
            "__meta_pve_name": "prom-web",
            "__meta_pve_type": "lxc",
            "__meta_pve_status": "running",
            "__meta_pve_node": "pve1",
            "__meta_pve_cluster": "lab",
            "__meta_pve_tags": "prom,web",
            "__meta_pve_ipv4": web,
            "__meta_pve_port": "8080",
            "__meta_pve_routes": "web.prom.test",
        }
        assert by_address[web]["discoveredLabels"]["__meta_pve_vmid"] == str(WEB)
        assert "__meta_pve_port" not in by_address[web]["discoveredLabels"]
        off_labels = by_address[off]["discoveredLabels"]
        assert off_labels["__meta_pve_status"] == "stopped"
        assert "__meta_pve_tags" not in off_labels
        # The relabelled labels survive into the target's own labels.
        assert by_address[f"{web}:8080"]["labels"]["guest"] == "prom-web"
        assert by_address[f"{web}:8080"]["labels"]["pve_tags"] == "prom,web"
        assert by_address[off]["labels"]["guest"] == "prom-off"
        assert all(t["scrapePool"] == "pve" for t in targets)
