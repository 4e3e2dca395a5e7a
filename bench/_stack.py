"""The proxy benchmarks' stack, each part in its own process: `pxproxy lab` (one guest whose
HTTP server is the upstream), `pxproxy run` proxying `bench.local` to it, and nginx proxying to
the same guest. With `fast=True` also a fast upstream on the guest's address (nginx answering
`return 200` with the guest's body), which both proxies route `fast.local` to. With
`workers2=True` also a second `pxproxy run` with `proxy: {workers: 2}` (the daemon and one
worker process on its proxy port), same routes, same lab. All on loopback; everything is
stopped on exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

GUEST_IP = "127.10.0.100"
GUEST_PORT = 8080
HOST = "bench.local"
FAST_HOST = "fast.local"
FAST_PORT = 8081
FAST_BIG_BYTES = 1024**3  # the fast upstream's /big: a sparse file of this size

SCENARIO = """\
nodes: [pve1]
guests:
  - {vmid: 100, type: lxc, name: bench, node: pve1, status: running, static_ip: true,
     boot_time_s: 0.2, shutdown_time_s: 0.05}
"""

NGINX_CONF = """\
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # nginx closes a keep-alive connection after 1,000 requests by default; the others do not.
    keepalive_requests 1000000;
    upstream guest {{ server {ip}:{port}; keepalive 64; keepalive_requests 1000000; }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    server {{
        listen 127.0.0.1:{listen};
        client_max_body_size 0;
        location / {{
            proxy_pass http://guest;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;          # stream like pxproxy does
            # Unbuffered, nginx relays a body through one proxy_buffer_size buffer: 64k, not the
            # default page, or a 1 GiB body crawls through it at a third of the speed.
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_request_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
{fast}}}
"""

# nginx's second route, to the fast upstream (one worker; the guest's body and headers); after
# the guest's server, which stays the default for other Hosts.
NGINX_FAST_ROUTE = """\
    upstream fast {{ server {ip}:{port}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{listen};
        server_name {host};
        location / {{
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_request_buffering off;
        }}
    }}
"""

FAST_UPSTREAM_CONF = """\
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen {ip}:{port};
        location = /big {{
            sendfile on;
            alias {tmp}/big.bin;
            default_type application/octet-stream;
        }}
        location / {{
            default_type "text/plain; charset=utf-8";
            add_header X-Lab-Guest {vmid};
            return 200 "bench (vmid {vmid})\\n";
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    direct: str
    nginx: str
    pxproxy: str
    api: str
    token: str
    pxproxy_pid: int
    nginx_pids: list[int]
    lab_pid: int  # the guest's HTTP server runs in it
    fast: str | None = None  # the fast upstream, direct
    fast_pid: int | None = None  # its nginx master (the worker is its child)
    pxproxy_w2: str | None = None  # the second daemon, proxy.workers 2
    api_w2: str | None = None
    # Its daemon, then its worker processes (the daemon's children): the CPU to account for.
    pxproxy_w2_pids: list[int] = field(default_factory=list)


async def _read_until(stream: asyncio.StreamReader, pattern: str, timeout_s: float = 60) -> str:
    text = ""
    async with asyncio.timeout(timeout_s):
        while not re.search(pattern, text):
            line = await stream.readline()
            if not line:
                raise RuntimeError(f"process ended before {pattern!r}:\n{text}")
            text += line.decode()
    return text


async def _wait_ok(url: str, headers: dict[str, str] | None = None, timeout_s: float = 60) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


@dataclass(frozen=True)
class LabProcess:
    """A running `pxproxy lab`: where it listens and the credentials it printed."""

    port: int
    token_id: str
    secret: str
    fingerprint: str

    def cluster_yaml(self, poll_interval: str = "1s") -> str:
        """The config's `proxmox:` section for this lab."""
        return (
            f"proxmox:\n  - url: https://127.0.0.1:{self.port}\n"
            f"    token_id: '{self.token_id}'\n    secret: '{self.secret}'\n"
            f"    tls: {{fingerprint: '{self.fingerprint}'}}\n"
            f"    poll_interval: {poll_interval}\n    ips: {{loopback: true}}\n"
        )


async def start_lab(
    tmp: Path,
    procs: list[asyncio.subprocess.Process],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    quiet: bool = False,
) -> LabProcess:
    """`pxproxy lab` with the bench SCENARIO, added to `procs` (stop them with stop_all)."""
    (tmp / "lab.yml").write_text(SCENARIO, encoding="utf-8")
    port = free_port()
    lab = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pxproxy", "lab", "--listen", f"127.0.0.1:{port}"),
        *("--scenario", str(tmp / "lab.yml")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL if quiet else None,
        env=env,
        cwd=cwd,
    )
    procs.append(lab)
    assert lab.stdout is not None
    text = await _read_until(lab.stdout, r"Ctrl-C stops")
    fingerprint = re.search(r"fingerprint \(SHA-256\): (\S+)", text)
    token = re.search(r"API token:\s+(\S+) = (\S+)", text)
    if fingerprint is None or token is None:
        raise RuntimeError(f"pxproxy lab printed no fingerprint or token:\n{text}")
    return LabProcess(port, token.group(1), token.group(2), fingerprint.group(1))


async def start_daemon(
    config: Path,
    procs: list[asyncio.subprocess.Process],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> asyncio.subprocess.Process:
    """`pxproxy run -c config`, added to `procs`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pxproxy", "run", "-c", str(config), env=env, cwd=cwd
    )
    procs.append(proc)
    return proc


def _daemon_yaml(
    lab: LabProcess,
    proxy_port: int,
    api_port: int,
    token: str,
    *,
    idle: str | None,
    fast: bool,
    extra: str = "",
) -> str:
    """The bench daemon's config: `bench.local` (and `fast.local`) to the lab guest."""
    idle_yaml = f"\n    idle: {{timeout: {idle}, wake_timeout: 30s}}" if idle else ""
    fast_yaml = f"  - {{host: {FAST_HOST}, guest: 100, port: {FAST_PORT}}}\n"
    return (
        lab.cluster_yaml()
        + f"listen: {{proxy: '127.0.0.1:{proxy_port}', api: '127.0.0.1:{api_port}'}}\n"
        f"api: {{tokens: [{{name: bench, secret: {token}}}]}}\n"
        f"routes:\n  - host: {HOST}\n    guest: 100\n    port: {GUEST_PORT}{idle_yaml}\n"
        f"{fast_yaml if fast else ''}log_level: warning\n{extra}"
    )


async def _workers_listening(
    api: str, daemon: asyncio.subprocess.Process, timeout_s: float = 60
) -> list[int]:
    """The worker pids once /health shows every proxy worker running and listening (they
    start after the daemon and bind beside it a moment later)."""
    workers: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        asyncio.timeout(timeout_s),
    ):
        while True:
            if daemon.returncode is not None:
                raise RuntimeError(f"the proxy.workers daemon ended (exit {daemon.returncode})")
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with session.get(f"{api}/health") as resp:
                    workers = (await resp.json()).get("proxy_workers") or []
            if workers and all(w["running"] and w["listening"] for w in workers):
                return [int(w["pid"]) for w in workers]
            await asyncio.sleep(0.1)


async def stop_all(procs: list[asyncio.subprocess.Process], timeout_s: float = 10) -> None:
    """Terminate the processes, newest first; kill what does not end in `timeout_s`."""
    for proc in reversed(procs):
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout_s)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def stack(
    idle: str | None = None,
    fast: bool = False,
    code: str | None = None,
    workers2: bool = False,
) -> AsyncIterator[Stack]:
    """`idle`: an idle timeout for the route (the wake benchmark); None: always on. `fast`: also
    the fast upstream on the guest's address, port FAST_PORT, routed as FAST_HOST. `code`: run
    the lab and the daemon from this checkout (the code before a change). `workers2`: also the
    second daemon, `proxy: {workers: 2}`, on its own ports (one lab only: two would both put
    vmid 100 on the guest's address)."""
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed: run bash bench/setup.sh")
    procs: list[asyncio.subprocess.Process] = []
    # `python -m` puts the cwd first on sys.path; PYTHONPATH for what they import besides.
    env = {**os.environ, "PYTHONPATH": code} if code else None
    with tempfile.TemporaryDirectory(prefix="pxproxy-bench-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            lab = await start_lab(tmp, procs, env=env, cwd=code)
            proxy_port, api_port, nginx_port = free_port(), free_port(), free_port()
            ops = "bench-token-0123456789"
            (tmp / "pxproxy.yml").write_text(
                _daemon_yaml(lab, proxy_port, api_port, ops, idle=idle, fast=fast),
                encoding="utf-8",
            )
            daemon = await start_daemon(tmp / "pxproxy.yml", procs, env=env, cwd=code)
            w2: asyncio.subprocess.Process | None = None
            w2_proxy_port, w2_api_port = free_port(), free_port()
            if workers2:
                # Its own state file: two daemons must not share one SQLite database.
                extra = f"proxy: {{workers: 2}}\nstate: {{path: '{tmp}/state-w2.db'}}\n"
                (tmp / "pxproxy-w2.yml").write_text(
                    _daemon_yaml(
                        lab, w2_proxy_port, w2_api_port, ops, idle=idle, fast=fast, extra=extra
                    ),
                    encoding="utf-8",
                )
                w2 = await start_daemon(tmp / "pxproxy-w2.yml", procs, env=env, cwd=code)
            fast_route = ""
            upstream: asyncio.subprocess.Process | None = None
            if fast:
                upstream = await _start_fast_upstream(tmp / "fast", procs)
                fast_route = NGINX_FAST_ROUTE.format(
                    ip=GUEST_IP, port=FAST_PORT, listen=nginx_port, host=FAST_HOST
                )
            (tmp / "nginx.conf").write_text(
                NGINX_CONF.format(
                    tmp=tmp, ip=GUEST_IP, port=GUEST_PORT, listen=nginx_port, fast=fast_route
                ),
                encoding="utf-8",
            )
            nginx = await asyncio.create_subprocess_exec(
                "nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"
            )
            procs.append(nginx)
            direct = f"http://{GUEST_IP}:{GUEST_PORT}"
            api = f"http://127.0.0.1:{api_port}"
            auth = {"Authorization": f"Bearer {ops}"}
            await _wait_ok(f"{api}/api/v1/lookup?ip={GUEST_IP}", auth)
            await _wait_ok(f"http://127.0.0.1:{nginx_port}/healthz")
            if not idle:
                await _wait_ok(f"http://127.0.0.1:{proxy_port}/healthz", {"Host": HOST})
            if fast:
                await _wait_ok(f"http://127.0.0.1:{proxy_port}/", {"Host": FAST_HOST})
                await _wait_ok(f"http://127.0.0.1:{nginx_port}/", {"Host": FAST_HOST})
            w2_pids: list[int] = []
            if w2 is not None:
                w2_api = f"http://127.0.0.1:{w2_api_port}"
                await _wait_ok(f"{w2_api}/api/v1/lookup?ip={GUEST_IP}", auth)
                workers = await _workers_listening(w2_api, w2)
                children = {int(p) for p in await _pgrep_children(w2.pid)}
                if not set(workers) <= children:
                    raise RuntimeError(f"workers {workers} are not all children of {w2.pid}")
                w2_pids = [w2.pid, *workers]
                w2_url = f"http://127.0.0.1:{w2_proxy_port}"
                if not idle:
                    await _wait_ok(f"{w2_url}/healthz", {"Host": HOST})
                if fast:
                    await _wait_ok(f"{w2_url}/", {"Host": FAST_HOST})
            nginx_pids = [int(p) for p in (await _pgrep_children(nginx.pid)) if p.strip()]
            yield Stack(
                direct=direct,
                nginx=f"http://127.0.0.1:{nginx_port}",
                pxproxy=f"http://127.0.0.1:{proxy_port}",
                api=api,
                token=ops,
                pxproxy_pid=daemon.pid,
                nginx_pids=[nginx.pid, *nginx_pids],
                lab_pid=procs[0].pid,
                fast=f"http://{GUEST_IP}:{FAST_PORT}" if fast else None,
                fast_pid=upstream.pid if upstream else None,
                pxproxy_w2=f"http://127.0.0.1:{w2_proxy_port}" if w2 else None,
                api_w2=f"http://127.0.0.1:{w2_api_port}" if w2 else None,
                pxproxy_w2_pids=w2_pids,
            )
        finally:
            await stop_all(procs)


async def _pgrep_children(pid: int) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        "pgrep", "-P", str(pid), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode().split()


async def _start_fast_upstream(
    tmp: Path, procs: list[asyncio.subprocess.Process]
) -> asyncio.subprocess.Process:
    """nginx answering every request as the lab guest's index does (body and X-Lab-Guest), on
    the guest's address: an upstream far faster than the guest, to see the proxy's own ceiling.
    Its /big is a file of FAST_BIG_BYTES (Content-Length, sendfile), whatever the query."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    with (tmp / "big.bin").open("wb") as big:
        big.truncate(FAST_BIG_BYTES)  # sparse: no disk used
    # Started by root, nginx's workers run as nobody: they must get through the private
    # temporary directory (0700) to the file.
    tmp.parent.chmod(0o711)
    (tmp / "nginx.conf").write_text(
        FAST_UPSTREAM_CONF.format(tmp=tmp, ip=GUEST_IP, port=FAST_PORT, vmid=100),
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        "nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-g", "daemon off;"
    )
    procs.append(proc)
    await _wait_ok(f"http://{GUEST_IP}:{FAST_PORT}/")
    return proc
