"""`pxproxy demo` and `pxproxy lab` as a user runs them: subprocesses, printed instructions that
work, Ctrl-C that cleans up."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def read_until(stream: asyncio.StreamReader, marker: str, timeout_s: float = 60) -> str:
    text = ""
    async with asyncio.timeout(timeout_s):
        while marker not in text:
            line = await stream.readline()
            if not line:
                pytest.fail(f"process ended before printing {marker!r}:\n{text}")
            text += line.decode()
    return text


async def get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def get_host(url: str, host: str) -> tuple[int, str]:
    """A request with an explicit Host header (the test need not resolve *.localhost)."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers={"Host": host}) as resp,
    ):
        return resp.status, await resp.text()


async def test_demo_prints_instructions_that_work() -> None:
    api_port, proxy_port = free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        "demo",
        "--api",
        f"127.0.0.1:{api_port}",
        "--proxy",
        f"127.0.0.1:{proxy_port}",
        "--token",
        "demo-token-0123456789",
        "--dns",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        text = await read_until(proc.stdout, "Ctrl-C stops")
        assert "demo-token-0123456789" in text
        # The dashboard's address, served by the daemon itself.
        dashboard = re.search(r"^  dashboard: (http://127\.0\.0\.1:\d+/ui/) ", text, re.M)
        assert dashboard is not None
        status, body = await get(dashboard.group(1))
        assert (status, "<title>pxproxy dashboard</title>" in body) == (200, True)
        # The daemon's own log is in the terminal too, each line marked: its start-up summary.
        daemon_line = r"^\[pxproxy\] \S+ \S+ INFO pxproxy\.[\w.]+: "
        assert re.search(daemon_line + r"pxproxy \S+ starting; ", text, re.M)
        assert re.search(daemon_line + r"cluster lab: PVE \S+, 2 nodes ", text, re.M)
        lookups = re.findall(r'curl -s -H "Authorization: Bearer (\S+)" "(\S+lookup\?\S+)"', text)
        assert len(lookups) == 2
        for token, url in lookups:
            status, body = await get(url, token)
            assert status == 200, body
            assert '"guest"' in body
        (guest_url, name) = re.findall(r"curl -s (http://127\.\d+\.\d+\.\d+:\d+/)\s+# (\S+)", text)[
            0
        ]
        status, body = await get(guest_url)
        assert (status, body.split(" ")[0]) == (200, name)
        assert re.search(r"\S+\.demo\.localhost -> \S+:8080  \(idle-watch, 60s\)", text)
        # Routes through the proxy: a running guest, then a sleeping one woken by the request.
        running = re.search(r"curl -s http://(\S+)\.demo\.localhost:(\d+)/\s+# (\S+) through", text)
        sleeping = re.search(
            r"curl -s http://(\S+)\.demo\.localhost:(\d+)/\s+# \S+ is asleep", text
        )
        assert running is not None
        assert sleeping is not None
        for match in (running, sleeping):
            name, port = match.group(1), match.group(2)
            status, body = await get_host(f"http://127.0.0.1:{port}/", f"{name}.demo.localhost")
            assert (status, body.split(" ")[0]) == (200, name)
        # The game server's TCP and UDP routes, on ports the system picked, echo.
        tcp = re.search(r"^  tcp 127\.0\.0\.1:(\d+) -> minecraft:25565", text, re.M)
        udp = re.search(r"^  udp 127\.0\.0\.1:(\d+) -> minecraft:19132", text, re.M)
        assert tcp is not None
        assert udp is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", int(tcp.group(1)))
        writer.write(b"ping\n")
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"ping\n"
        writer.close()
        assert await _udp_echo(int(udp.group(1)), b"bedrock") == b"bedrock"
        # The wake shows in the terminal as it happens, with its duration.
        woken = sleeping.group(1)
        text += await read_until(proc.stdout, f"idle-watch: {woken} ready after")
        assert re.search(daemon_line + rf"idle-watch: waking {woken}$", text, re.M)
        assert re.search(daemon_line + rf"idle-watch: {woken} ready after [\d.]+s$", text, re.M)
        # Streams: a stats line of the running guest, and a command in a container.
        stats_url = re.search(r'curl -sN -H "[^"]+" (\S+/stats/\d+)', text)
        assert stats_url is not None
        status, body = await get(stats_url.group(1) + "?stream=0", "demo-token-0123456789")
        assert status == 200
        assert re.fullmatch(r"running\|[\d.]+%\|\S+/\S+\|[\d.]+%\|\S+/\S+\|\S+/\S+\n", body)
        exec_line = re.search(r"-d '(\{.*\})' (\S+/exec/\S+/\d+)", text)
        assert exec_line is not None
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                exec_line.group(2),
                data=exec_line.group(1),
                headers={"Authorization": "Bearer demo-token-0123456789"},
            ) as resp,
        ):
            output = await resp.text()
        assert resp.status == 200
        assert output.endswith("[exit status 0]\n")
        status, body = await get(f"http://127.0.0.1:{api_port}/health")
        assert '"status":"ok"' in body
        await _companion_lines_work(text, proxy_port)
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
    assert code == 0
    # It says what it stopped.
    assert re.search(
        rf"^Stopped: pxproxy \(API on port {api_port}, proxy on port {proxy_port}\); "
        r"the lab's Proxmox API \(https://127\.0\.0\.1:\d+\); \d+ running guests' servers "
        r"\(of 8 guests\)\.$",
        rest,
        re.M,
    ), rest
    # Everything it started is gone: the API port and the guest's address refuse.
    for host, port in (("127.0.0.1", api_port), ("127.10.0.100", 8080)):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)


async def test_lab_command_serves_and_stops() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        "lab",
        "--listen",
        f"127.0.0.1:{port}",
        "--guests",
        "3",
        "--nodes",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        text = await read_until(proc.stdout, "Ctrl-C stops")
        assert f"https://127.0.0.1:{port}" in text
        assert re.search(r"fingerprint \(SHA-256\): (?:[0-9A-F]{2}:){31}[0-9A-F]{2}", text)
        (ip,) = re.findall(r"lxc/100\s+wiki\s+pve1\s+running\s+(127\.[\d.]+):8080", text)
        status, body = await get(f"http://{ip}:8080/")
        assert (status, body) == (200, "wiki (vmid 100)\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await proc.wait()
    assert code == 0


async def test_lab_refuses_non_loopback() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        "lab",
        "--listen",
        "0.0.0.0:8006",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "loopback only" in err.decode()


async def test_lab_scenario_errors_name_the_problem(tmp_path: Path) -> None:
    scenario = tmp_path / "lab.yml"
    scenario.write_text(
        "nodes: [pve1]\nguests:\n  - {vmid: 100, type: lxc, name: wiki, colour: red}\n",
        encoding="utf-8",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pxproxy",
        "lab",
        "--listen",
        "127.0.0.1:0",
        "--scenario",
        str(scenario),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "guests[0]" in err.decode()
    assert "colour" in err.decode()


async def _companion_lines_work(text: str, proxy_port: int) -> None:
    """The dig lines answer (the real dig), the discovery URLs answer, and the route the
    demo's guest declares in its notes is served."""
    digs = re.findall(r"^  (dig @127\.0\.0\.1 -p \d+ (\S+))\s+# ([^\n]+)$", text, re.M)
    assert len(digs) == 2, text
    for line, name, _ in digs:
        proc = await asyncio.create_subprocess_exec(
            *line.split()[:4], "+short", name, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert re.fullmatch(r"127\.\d+\.\d+\.\d+\n", out.decode()), (line, out)
    # Asleep: pxproxy's proxy address; awake: the guest's own.
    assert "asleep" in digs[1][2]
    for url in re.findall(r'-H "[^"]+" (\S+/integrations/\S+)\s', text):
        status, body = await get(url, "demo-token-0123456789")
        assert status == 200, (url, body)
    notes = re.search(r"^  (notes-(\S+)\.demo\.localhost) -> ", text, re.M)
    assert notes is not None, text
    host, name = notes.group(1), notes.group(2)
    async with asyncio.timeout(30):
        while True:  # the notes are read after the first poll
            status, body = await get_host(f"http://127.0.0.1:{proxy_port}/", host)
            if status == 200:
                break
            await asyncio.sleep(0.2)
    assert body.split(" ")[0] == name


async def _udp_echo(port: int, payload: bytes) -> bytes:
    """One datagram to 127.0.0.1:port and its echo (a few tries: UDP may drop one)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not answer.done():
                answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        for _ in range(5):
            transport.sendto(payload)
            try:
                return await asyncio.wait_for(asyncio.shield(answer), 2)
            except TimeoutError:
                continue
        raise AssertionError("no UDP echo through the demo's route")
    finally:
        transport.close()
