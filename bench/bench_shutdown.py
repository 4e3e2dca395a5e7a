"""Time from SIGTERM to exit while everything long-lived is open, and how each client's
exchange ended: a follow journal and an exec of `sleep 60` in a container, a proxied WebSocket
and event stream, a request held for a wake. The lab runs here; `pxproxy run` is a subprocess.

    python3 -m bench.bench_shutdown [--baseline-src DIR]

`--baseline-src` runs the same scenario first against another checkout's `pxproxy` (e.g. a
`git worktree` of the last release) so both figures come from one run. Bounded: each daemon
is killed 90 s after SIGTERM at the latest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from pxproxy.lab.certs import make_certificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster

from ._util import row

CT, WEB, SLEEPY = 9101, 9102, 9103
TOKEN = "bench-shutdown-token-0123"
GRACE_S = 10.0
KILL_AFTER_S = 90.0
CLIENT_LIMIT_S = 120.0


def config_text(lab: LabServer) -> str:
    return f"""
proxmox:
  - name: lab
    url: {lab.url}
    token_id: "{lab.credentials.token_id}"
    secret: "{lab.credentials.token_secret}"
    username: root@pam
    password: "{lab.credentials.root_password}"
    tls: {{fingerprint: "{lab.fingerprint}"}}
    poll_interval: 200ms
    ips: {{loopback: true}}
listen: {{api: "127.0.0.1:0", proxy: "127.0.0.1:0"}}
api:
  tokens:
    - {{name: ops, secret: "{TOKEN}", scopes: [read, exec, power]}}
routes:
  - {{host: web.test, guest: lab:{WEB}, port: 8080}}
  - {{host: sleepy.test, guest: lab:{SLEEPY}, port: 8080, idle: {{timeout: 10m}}}}
"""


async def ending(coro: Any) -> str:
    """How an exchange ended, in a few words."""
    try:
        async with asyncio.timeout(CLIENT_LIMIT_S):
            return str(await coro)
    except TimeoutError:
        return "still open when the client gave up"
    except (aiohttp.ClientError, ConnectionError) as exc:
        return f"cut ({type(exc).__name__})"


async def last_line(resp: aiohttp.ClientResponse) -> str:
    lines = (await resp.read()).decode().strip().splitlines()
    return f"ended: {lines[-1][:60]!r}" if lines else "ended without a word"


async def ws_end(ws: aiohttp.ClientWebSocketResponse) -> str:
    msg = await ws.receive()
    if msg.type is aiohttp.WSMsgType.CLOSE:
        return f"close frame {msg.data}"
    return f"no close frame ({msg.type.name})"


async def sse_end(resp: aiohttp.ClientResponse) -> str:
    await resp.read()
    return "clean end"


async def held_end(request: Any) -> str:
    async with request as resp:
        return f"{resp.status} {(await resp.text())[:60]!r}"


async def scenario(lab: LabServer, src: Path | None, tmp: Path) -> dict[str, str]:
    config = tmp / "pxproxy.yml"
    text = config_text(lab)
    if src is None:  # this checkout knows shutdown_grace; an older one may not
        text += f"shutdown_grace: {GRACE_S}s\n"
    config.write_text(text, encoding="utf-8")
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pxproxy", "run", "-c", str(config), env=env, cwd=tmp,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    async with asyncio.timeout(20):
        while len(ports) < 2:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError("daemon exited early")
            for name in ("API", "proxy"):
                if m := re.search(rf"{name} listening on \S+?:(\d+)", line):
                    ports[name] = int(m.group(1))
    drain = asyncio.create_task(_discard(proc.stdout))
    api, proxy = f"http://127.0.0.1:{ports['API']}", f"http://127.0.0.1:{ports['proxy']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=None)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _ in range(200):
                async with http.get(f"{api}/api/v1/routes", headers=auth) as resp:
                    if resp.status == 200 and {r["state"] for r in await resp.json()} == {
                        "ready",
                        "asleep",
                    }:
                        break
                await asyncio.sleep(0.05)
            journal = await http.get(f"{api}/journal/pve1/{CT}", headers=auth)
            exec_req = asyncio.create_task(
                http.post(
                    f"{api}/exec/pve1/{CT}",
                    json={"argv": ["sleep", "60"], "timeout": 120},
                    headers=auth,
                )
            )
            ws = await http.ws_connect(f"{proxy}/ws", headers={"Host": "web.test"})
            sse = await http.get(f"{proxy}/sse", headers={"Host": "web.test"})
            await sse.content.readline()
            held = http.get(f"{proxy}/", headers={"Host": "sleepy.test"})
            ends = {
                "journal -f in a container": asyncio.create_task(ending(last_line(journal))),
                "proxied WebSocket": asyncio.create_task(ending(ws_end(ws))),
                "proxied event stream": asyncio.create_task(ending(sse_end(sse))),
                "request held for a wake": asyncio.create_task(ending(held_end(held))),
            }
            await until(
                lambda: (
                    lab.consoles.open_sessions == 2 and any(t.id == str(SLEEPY) for t in lab.tasks)
                )
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(KILL_AFTER_S):
                    await proc.wait()
                exit_s = time.monotonic() - started
                exit_note = f"exit {proc.returncode} after {exit_s:.1f}s"
            except TimeoutError:
                proc.kill()
                await proc.wait()
                exit_note = f"killed: still running {KILL_AFTER_S:.0f}s after SIGTERM"

            async def exec_end() -> str:
                return await last_line(await exec_req)

            results = {"daemon": exit_note}
            results["exec sleep 60"] = await ending(exec_end())
            for name, task in ends.items():
                results[name] = await task
            with contextlib.suppress(TimeoutError):
                await until(lambda: lab.consoles.open_sessions == 0, 5.0)
            results["remote shells left open"] = str(lab.consoles.open_sessions)
            return results
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll a condition of the in-process lab (it has no events to wait on)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def run_once(src: Path | None) -> dict[str, str]:
    cluster = LabCluster()
    cluster.add_node("pve1")
    cluster.add_guest(CT, "lxc", "ct", "pve1", status="running")
    cluster.add_guest(WEB, "lxc", "web", "pve1", status="running")
    cluster.add_guest(SLEEPY, "lxc", "sleepy", "pve1", boot_time_s=120.0)
    lab = LabServer(cluster, port=0, certificate=make_certificate(("127.0.0.1",)))
    await lab.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return await scenario(lab, src, Path(tmp))
    finally:
        await lab.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    runs: list[tuple[str, Path | None]] = []
    if args.baseline_src:
        runs.append((f"baseline ({args.baseline_src})", args.baseline_src.resolve()))
    runs.append((f"this checkout (shutdown_grace {GRACE_S:g}s)", None))
    for label, src in runs:
        print(label)
        for name, value in (await run_once(src)).items():
            row(name, value)


if __name__ == "__main__":
    asyncio.run(main())
