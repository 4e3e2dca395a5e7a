"""Config reload end to end against the lab: a valid reload swaps routes, tokens and TCP
listeners; an invalid one changes nothing and shows in /health until a valid one; a wake in
flight and an open WebSocket both survive a reload; the file watch and SIGHUP trigger it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer
from pxproxy.wake.contract import WakeState
from pxproxy.wake.waker import Waker

from ..support import free_udp_port, lab_cluster, wait_for
from .daemon_process import running_daemon

# vmids 9562..9567: used by no other test (the lab derives guest addresses from vmids).
ALPHA, BETA, SLEEPY, CHAT, PROC, WATCHED = 9562, 9563, 9564, 9565, 9566, 9567
ECHO_PORT = 7000
OLD_TOKEN = "reload-old-token-0123456789"
NEW_TOKEN = "reload-new-token-0123456789"


def settings(lab: LabServer, routes: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {
        "proxmox": [lab_cluster(lab)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "api": {"tokens": [{"name": "ops", "secret": OLD_TOKEN}]},
        "routes": routes,
        **more,
    }


def write(path: Path, data: dict[str, Any] | str) -> None:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)


def web(host: str, vmid: int, **more: Any) -> dict[str, Any]:
    return {"host": host, "guest": f"lab:{vmid}", "port": 8080, **more}


@contextlib.asynccontextmanager
async def running(path: Path, *, watch: bool = False) -> AsyncIterator[Daemon]:
    """An in-process daemon on the file at `path`. Without `watch`, reloads happen only when
    the test calls `reload()` (no file watch racing the test's own reloads)."""
    daemon = Daemon(load_config(str(path)), config_path=path if watch else None)
    await daemon.start()
    daemon.config_path = path
    try:
        await wait_for(lambda: all(p.first_cycle.is_set() for p in daemon.pollers), 10, "a poll")
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def get(
    http: aiohttp.ClientSession, daemon: Daemon, host: str, path: str = "/"
) -> tuple[int, str]:
    url = f"http://127.0.0.1:{daemon.proxy_port}{path}"
    async with http.get(url, headers={"Host": host}) as resp:
        return resp.status, await resp.text()


async def api(
    http: aiohttp.ClientSession, daemon: Daemon, path: str, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"http://127.0.0.1:{daemon.api_port}{path}", headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def tcp_echo(address: tuple[str, int], payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(payload)
        writer.write_eof()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_valid_reload_swaps_routes_tokens_and_tcp_listeners(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab = lab_server.cluster
    lab.add_guest(ALPHA, "lxc", "alpha", "pve1", status="running", static_ip=True)
    lab.add_guest(
        BETA, "lxc", "beta", "pve1", status="running", static_ip=True, tcp_ports=(ECHO_PORT,)
    )
    await lab.open()
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("alpha.test", ALPHA)]))
    async with running(path) as daemon:
        assert await get(http, daemon, "alpha.test") == (200, f"alpha (vmid {ALPHA})\n")
        assert (await get(http, daemon, "beta.test"))[0] == 404
        assert (await api(http, daemon, "/api/v1/guests", OLD_TOKEN))[0] == 200
        assert daemon.tcp_proxy.bound_addresses() == {}

        new = settings(
            lab_server,
            [
                web("beta.test", BETA),
                {"listen": "127.0.0.1:0", "guest": f"lab:{BETA}", "port": ECHO_PORT},
            ],
            api={"tokens": [{"name": "ops", "secret": NEW_TOKEN}]},
        )
        write(path, new)
        assert await daemon.reload()
        assert daemon.reloads == 1

        assert await get(http, daemon, "beta.test") == (200, f"beta (vmid {BETA})\n")
        assert (await get(http, daemon, "alpha.test"))[0] == 404
        assert (await api(http, daemon, "/api/v1/guests", OLD_TOKEN))[0] == 401
        assert (await api(http, daemon, "/api/v1/guests", NEW_TOKEN))[0] == 200
        address = daemon.tcp_proxy.bound_addresses()["127.0.0.1:0"]
        assert await tcp_echo(address, b"through the new TCP route") == b"through the new TCP route"
        status, routes = await api(http, daemon, "/api/v1/routes", NEW_TOKEN)
        assert status == 200
        assert len(routes) == 2

        # The same file again: nothing to apply, nothing counted.
        assert await daemon.reload()
        assert daemon.reloads == 1


def invalid(kind: str, lab: LabServer) -> dict[str, Any] | str:
    if kind == "yaml":
        return "proxmox: [\n  - {name: lab\nroutes: ]]\n"
    if kind == "unknown key":
        return settings(lab, [web("alpha.test", ALPHA)], no_such_key=True)
    idle_a = {"timeout": "1m", "depends_on": [f"lab:{BETA}"]}
    idle_b = {"timeout": "1m", "depends_on": [f"lab:{ALPHA}"]}
    return settings(
        lab, [web("alpha.test", ALPHA, idle=idle_a), web("beta.test", BETA, idle=idle_b)]
    )


@pytest.mark.parametrize(
    ("kind", "says"),
    [("yaml", "yaml"), ("unknown key", "no_such_key"), ("cycle", "cycle")],
)
async def test_an_invalid_reload_changes_nothing_and_shows_in_health_until_a_valid_one(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession, kind: str, says: str
) -> None:
    lab = lab_server.cluster
    lab.add_guest(ALPHA, "lxc", "alpha", "pve1", status="running", static_ip=True)
    lab.add_guest(BETA, "lxc", "beta", "pve1", status="running", static_ip=True)
    await lab.open()
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("alpha.test", ALPHA)]))
    async with running(path) as daemon:
        status, health = await api(http, daemon, "/health")
        assert (status, health["status"]) == (200, "ok")
        config_before, routes_before = daemon.config, daemon.routes.current
        gates_before = [daemon.wake.gate_for(r.config) for r in routes_before.routes]

        write(path, invalid(kind, lab_server))
        assert not await daemon.reload()
        assert daemon.reloads == 0
        assert daemon.config is config_before
        assert daemon.routes.current is routes_before
        assert [daemon.wake.gate_for(r.config) for r in routes_before.routes] == gates_before
        assert await get(http, daemon, "alpha.test") == (200, f"alpha (vmid {ALPHA})\n")
        assert (await get(http, daemon, "beta.test"))[0] == 404
        assert (await api(http, daemon, "/api/v1/guests", OLD_TOKEN))[0] == 200

        status, health = await api(http, daemon, "/health")
        assert status == 200
        assert health["status"] == "degraded"
        assert health["config"]["reload"] == "failed"
        errors = health["config"]["errors"]
        assert errors
        assert says in " ".join(errors).lower()
        assert all(c["ok"] for c in health["clusters"])  # only the config is the matter

        # Fixed: applied, and the errors are gone.
        write(path, settings(lab_server, [web("alpha.test", ALPHA), web("beta.test", BETA)]))
        assert await daemon.reload()
        status, health = await api(http, daemon, "/health")
        assert health["status"] == "ok"
        assert "config" not in health
        assert await get(http, daemon, "beta.test") == (200, f"beta (vmid {BETA})\n")


async def test_a_request_held_for_a_wake_is_answered_across_a_reload_of_its_route(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab_server.cluster.add_guest(SLEEPY, "lxc", "sleepy", "pve1", static_ip=True, boot_time_s=1.5)
    path = tmp_path / "pxproxy.yml"
    idle = {"timeout": "1m", "wake_timeout": "20s"}
    write(path, settings(lab_server, [web("sleepy.test", SLEEPY, idle=idle)]))
    async with running(path) as daemon:
        gate = daemon.wake.gate_for(daemon.routes.current.routes[0].config)
        assert isinstance(gate, Waker)
        assert gate.state is WakeState.ASLEEP
        held = asyncio.create_task(get(http, daemon, "sleepy.test"))
        await wait_for(lambda: gate.state is WakeState.WAKING, 10, "the wake to begin")
        assert lab_server.cluster.guests[SLEEPY].busy is not None  # its start is running

        longer = {**idle, "timeout": "2m"}
        write(
            path,
            settings(
                lab_server,
                [web("sleepy.test", SLEEPY, idle=longer), web("also.test", SLEEPY, idle=longer)],
            ),
        )
        assert await daemon.reload()
        assert not held.done()  # the reload did not answer (or drop) the held request
        assert daemon.wake.gate_for(daemon.routes.current.routes[0].config) is gate
        assert gate.idle is not None
        assert gate.idle.timeout == 120

        async with asyncio.timeout(20):
            assert await held == (200, f"sleepy (vmid {SLEEPY})\n")
        starts = [t for t in lab_server.tasks if t.id == str(SLEEPY) and t.type == "vzstart"]
        assert len(starts) == 1
        assert await get(http, daemon, "also.test") == (200, f"sleepy (vmid {SLEEPY})\n")


async def test_an_open_websocket_keeps_working_across_reloads_that_move_the_listener(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab_server.cluster.add_guest(CHAT, "lxc", "chat", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    path = tmp_path / "pxproxy.yml"
    idle = {"timeout": "10m"}
    write(path, settings(lab_server, [web("chat.test", CHAT, idle=idle)]))
    async with running(path) as daemon:
        old_port = daemon.proxy_port
        url = f"http://127.0.0.1:{old_port}/ws"
        async with http.ws_connect(url, headers={"Host": "chat.test"}) as ws:
            await ws.send_str("before")
            assert (await ws.receive(timeout=10)).data == "before"

            # Tokens, idle settings and another route change; the socket stays.
            write(
                path,
                settings(
                    lab_server,
                    [web("chat.test", CHAT, idle={"timeout": "20m"}), web("more.test", CHAT)],
                    api={"tokens": [{"name": "ops", "secret": NEW_TOKEN}]},
                ),
            )
            assert await daemon.reload()
            await ws.send_str("after a reload")
            assert (await ws.receive(timeout=10)).data == "after a reload"

            # The proxy listener moves: new connections go to the new address, this one stays.
            moved = settings(
                lab_server,
                [web("chat.test", CHAT, idle={"timeout": "20m"})],
                listen={"proxy": "127.0.0.2:0", "api": "127.0.0.1:0"},
            )
            write(path, moved)
            assert await daemon.reload()
            assert daemon.proxy_port is not None
            await ws.send_str("after the listener moved")
            assert (await ws.receive(timeout=10)).data == "after the listener moved"
            async with http.get(
                f"http://127.0.0.2:{daemon.proxy_port}/", headers={"Host": "chat.test"}
            ) as resp:
                assert (resp.status, await resp.text()) == (200, f"chat (vmid {CHAT})\n")
            with pytest.raises(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{old_port}/", headers={"Host": "chat.test"}):
                    pass
            assert not ws.closed


async def test_editing_the_file_reloads_without_a_signal(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab_server.cluster.add_guest(WATCHED, "lxc", "watched", "pve1", status="running")
    await lab_server.cluster.open()
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("one.test", WATCHED)]))
    async with running(path, watch=True) as daemon:
        assert (await get(http, daemon, "two.test"))[0] == 404
        write(path, settings(lab_server, [web("one.test", WATCHED), web("two.test", WATCHED)]))
        await wait_for(lambda: daemon.reloads == 1, 10, "the watch to reload")
        assert await get(http, daemon, "two.test") == (200, f"watched (vmid {WATCHED})\n")


async def test_sighup_reloads_a_running_pxproxy_process(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab_server.cluster.add_guest(PROC, "lxc", "proc", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("first.test", PROC)]))
    async with running_daemon(path) as daemon:
        await daemon.wait_listening("api", "proxy")
        proxy = f"http://127.0.0.1:{daemon.ports['proxy']}/"

        async def status_of(host: str) -> int:
            async with http.get(proxy, headers={"Host": host}) as resp:
                return resp.status

        await wait_for(lambda: status_of_ok(status_of, "first.test"), 15, "the first route")
        assert await status_of("second.test") == 404

        write(path, settings(lab_server, [web("second.test", PROC)]))
        os.kill(daemon.proc.pid, signal.SIGHUP)
        await wait_for(lambda: status_of_ok(status_of, "second.test"), 15, "the reloaded route")
        assert await status_of("first.test") == 404
        await wait_for(lambda: "config reloaded: routes" in daemon.text, 10, "the reload's log")
        assert "SIGHUP: reloading" in daemon.text
        assert daemon.proc.returncode is None  # SIGHUP reloads; it does not end the daemon

        write(path, "routes: [\n")
        os.kill(daemon.proc.pid, signal.SIGHUP)
        await wait_for(lambda: "config reload failed" in daemon.text, 10, "the failure's log")
        assert await status_of("second.test") == 200

        daemon.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await daemon.finish()
        assert daemon.proc.returncode == 0


async def status_of_ok(status_of: Any, host: str) -> bool:
    return bool(await status_of(host) == 200)


async def test_a_listener_that_cannot_bind_on_reload_keeps_the_old_one_and_shows_in_health(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    lab = lab_server.cluster
    lab.add_guest(ALPHA, "lxc", "alpha", "pve1", status="running", static_ip=True)
    lab.add_guest(
        BETA, "lxc", "beta", "pve1", status="running", static_ip=True, tcp_ports=(ECHO_PORT,)
    )
    await lab.open()
    taken, taken_too = socket.socket(), socket.socket()
    for sock in (taken, taken_too):
        sock.bind(("127.0.0.3", 0))
        sock.listen()
    busy = f"127.0.0.3:{taken.getsockname()[1]}"
    busy_too = f"127.0.0.3:{taken_too.getsockname()[1]}"
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("alpha.test", ALPHA)]))
    try:
        async with running(path) as daemon:
            port = daemon.proxy_port
            tcp = {"listen": busy_too, "guest": f"lab:{BETA}", "port": ECHO_PORT}
            write(
                path,
                settings(
                    lab_server,
                    [web("alpha.test", ALPHA), web("beta.test", BETA), tcp],
                    listen={"proxy": busy, "api": "127.0.0.1:0"},
                ),
            )
            await daemon.reload()
            # The proxy listener that could not move stays where it was, serving the new set.
            assert daemon.proxy_port == port
            assert await get(http, daemon, "beta.test") == (200, f"beta (vmid {BETA})\n")
            _, health = await api(http, daemon, "/health")
            assert health["status"] == "degraded"
            errors = " ".join(health["config"]["listen_errors"])
            assert "listen.proxy" in errors
            assert busy in errors
            assert busy_too in errors

            taken.close()
            taken_too.close()
            write(path, settings(lab_server, [web("alpha.test", ALPHA)]))
            assert await daemon.reload()
            _, health = await api(http, daemon, "/health")
            assert health["status"] == "ok", health
    finally:
        taken.close()
        taken_too.close()


async def test_the_proxy_listener_moves_from_the_wildcard_to_one_address_on_its_port(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """0.0.0.0:P to 127.0.0.1:P: the old socket holds the port, so it is freed first."""
    lab_server.cluster.add_guest(ALPHA, "lxc", "alpha", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    path = tmp_path / "pxproxy.yml"
    routes = [web("alpha.test", ALPHA)]
    write(
        path,
        settings(lab_server, routes, listen={"proxy": f"0.0.0.0:{port}", "api": "127.0.0.1:0"}),
    )
    async with running(path) as daemon:
        write(
            path,
            settings(
                lab_server, routes, listen={"proxy": f"127.0.0.1:{port}", "api": "127.0.0.1:0"}
            ),
        )
        assert await daemon.reload()
        assert daemon.proxy_port == port
        assert daemon.endpoints().http == ("127.0.0.1", port)
        assert await get(http, daemon, "alpha.test") == (200, f"alpha (vmid {ALPHA})\n")
        _, health = await api(http, daemon, "/health")
        assert health["status"] == "ok", health


async def test_a_reload_once_stopping_opens_nothing(lab_server: LabServer, tmp_path: Path) -> None:
    """A SIGHUP that lands during the drain: the reload is refused, no listener opens."""
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("alpha.test", ALPHA)]))
    async with running(path) as daemon:
        pass
    tcp = {"listen": "127.0.0.1:0", "guest": f"lab:{BETA}", "port": ECHO_PORT}
    write(path, settings(lab_server, [web("alpha.test", ALPHA), tcp]))
    assert not await daemon.reload()
    assert daemon.tcp_proxy.bound_addresses() == {}
    assert daemon.reloads == 0


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root, pxproxy = logging.getLogger(), logging.getLogger("pxproxy")
    levels = root.level, pxproxy.level
    try:
        yield root
    finally:
        root.setLevel(levels[0])
        pxproxy.setLevel(levels[1])


async def test_a_reload_keeps_the_log_level_unless_the_file_changes_it(
    lab_server: LabServer, tmp_path: Path, root_level: logging.Logger
) -> None:
    """`pxproxy run --log-level debug` with `log_level: info` in the file: reloading the
    routes must not turn debug off; changing log_level in the file does change it."""
    path = tmp_path / "pxproxy.yml"
    write(path, settings(lab_server, [web("alpha.test", ALPHA)], log_level="info"))
    async with running(path) as daemon:
        root_level.setLevel(logging.DEBUG)  # what --log-level debug set at start
        write(path, settings(lab_server, [web("beta.test", BETA)], log_level="info"))
        assert await daemon.reload()
        assert root_level.level == logging.DEBUG
        assert logging.getLogger("pxproxy").getEffectiveLevel() == logging.DEBUG
        write(path, settings(lab_server, [web("beta.test", BETA)], log_level="warning"))
        assert await daemon.reload()
        assert logging.getLogger("pxproxy").getEffectiveLevel() == logging.WARNING


async def test_dns_settings_that_cannot_bind_keep_the_running_responder(
    lab_server: LabServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A reload moving DNS to a taken port keeps the responder where it was (and says so in
    /health); twice in a row too; once the port is free, a SIGHUP-style reload of the same
    file moves it."""
    path = tmp_path / "pxproxy.yml"
    first = free_udp_port(tcp_too=True)  # DNS listens on both
    dns = {"zone": "pve.internal", "ttl": "1s"}
    write(path, settings(lab_server, [], dns={**dns, "listen": f"127.0.0.1:{first}"}))
    session = http
    async with running(path) as daemon:
        assert daemon.dns is not None
        assert daemon.dns.port == first
        for _ in range(2):  # the second failure must not lose the running responder either
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
                busy = free_udp_port(tcp_too=True)  # the last reload binds it, both ways
                taken.bind(("127.0.0.1", busy))
                write(path, settings(lab_server, [], dns={**dns, "listen": f"127.0.0.1:{busy}"}))
                assert await daemon.reload()
                assert daemon.dns is not None
                assert daemon.dns.port == first
                _, health = await api(session, daemon, "/health")
                assert health["status"] == "degraded"
                (error,) = health["config"]["listen_errors"]
                assert str(busy) in error
                assert "stays on its old settings" in error
        # The last port is free now: reloading the unchanged file binds it.
        assert await daemon.reload()
        assert daemon.dns is not None
        assert daemon.dns.port == busy
        _, health = await api(session, daemon, "/health")
        assert "listen_errors" not in health.get("config", {})
