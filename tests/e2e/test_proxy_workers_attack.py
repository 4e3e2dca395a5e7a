"""Attack review of `proxy.workers` through the daemon: a worker started again while the
certificate files are broken on disk. vmids 7295-7296 (this review's range is 7291-7299)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import yaml

from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..certificates import TestCa
from ..support import lab_cluster, wait_for

ALWAYS = 7295
ATTEMPTS = 40  # plain connections: with two listeners, all of them missing the worker is 2^-40


async def _plain_answer(port: int) -> bytes:
    """What the proxy port answers to plain HTTP on one new connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: always.wa.test\r\n\r\n")
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(5):
                return await reader.read(12)
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_restarted_worker_never_serves_plain_http_on_the_tls_port(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab_server.cluster.add_guest(ALWAYS, "lxc", "always", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    files = TestCa().issue("always.wa.test").write(tmp_path, "always")
    config = {
        "proxmox": [lab_cluster(lab_server)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "proxy": {"workers": 2, "tls": {"certificates": [files.model_dump()]}},
        "routes": [{"host": "always.wa.test", "guest": f"lab:{ALWAYS}", "port": 8080}],
    }
    path = tmp_path / "pxproxy.yml"
    await asyncio.to_thread(path.write_text, yaml.safe_dump(config))
    daemon = Daemon(load_config(str(path)), config_path=path)
    await daemon.start()
    try:
        workers = daemon.workers
        assert workers is not None
        await wait_for(
            lambda: all(w["listening"] for w in workers.describe()), 30, "the worker listening"
        )
        # A renewal half-written (certbot writes the files one after the other), and the
        # worker ends meanwhile (a crash, the OOM killer): the new one reads the files.
        await asyncio.to_thread(Path(files.cert).write_text, "")
        (pid,) = workers.pids()
        os.kill(pid, signal.SIGKILL)

        def settled() -> bool:
            (w,) = workers.describe()
            return w["restarts"] >= 1 and (w["listening"] or "error" in w or w["restarts"] >= 2)

        await wait_for(settled, 30, "the new worker's word")
        assert daemon.proxy_port is not None
        answers = [await _plain_answer(daemon.proxy_port) for _ in range(ATTEMPTS)]
        plain = [a for a in answers if a.startswith(b"HTTP/1.1 ")]
        assert not plain, f"{len(plain)} of {ATTEMPTS} plain connections served without TLS"
    finally:
        await daemon.stop()
