"""Exec round trip of `true` in a container: through pxproxy's `POST /exec` ÷ the bare termproxy
round trip scripted directly against the lab (POST termproxy + websocket + marker command).
N runs each, alternating, median ratio (target <= 1.5).

    python3 -m bench.bench_exec
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from urllib.parse import quote

import aiohttp
from aiohttp import web

from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers.guest_streams import guest_streams_setup
from pxproxy.config.loader import parse_config
from pxproxy.inventory.model import Guest, Node
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.lab.certs import make_certificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster
from pxproxy.metrics import Metrics
from pxproxy.pve.client import PveClient
from pxproxy.pve.termproxy_frames import encode_auth, encode_input, encode_resize

from ._util import row

N = 30
HOST = "127.0.0.1"
VMID = 101
TOKEN = "bench-exec-token-0123456789"


def guest() -> Guest:
    return Guest(
        "lab", f"lxc/{VMID}", "lxc", "pve1", VMID, "wiki", "running", False, (), (), 1, (),
        None, None, None, None, 0.0, 1.0, 0, 0, 0, 0, 0, 0, 0, 0,
    )  # fmt: skip


async def bare_round_trip(lab: LabServer, client: PveClient, session: aiohttp.ClientSession) -> int:
    """What any careful client must do: ticket, termproxy, websocket, markers, close."""
    _, ticket, csrf = await client.shell_credentials()
    headers = {"Cookie": f"PVEAuthCookie={ticket}"}
    async with session.post(
        f"{lab.url}/api2/json/nodes/pve1/termproxy",
        headers={**headers, "CSRFPreventionToken": csrf},
    ) as resp:
        opened = (await resp.json())["data"]
    url = (
        f"{lab.url}/api2/json/nodes/pve1/vncwebsocket?port={opened['port']}"
        f"&vncticket={quote(opened['ticket'], safe='')}"
    )
    token = secrets.token_hex(8)
    async with session.ws_connect(url, headers=headers, protocols=("binary",)) as ws:
        await ws.send_bytes(encode_auth(opened["user"], opened["ticket"]))
        await ws.send_bytes(encode_resize(200, 50))
        line = (
            f"printf '%s_%s\\n' S {token}; pct exec {VMID} -- true; "
            f"printf '%s_%s_%d\\n' E {token} $?\r"
        )
        await ws.send_bytes(encode_input(line))
        screen = b""
        end = f"E_{token}_".encode()
        while end not in screen or not screen.split(end, 1)[1].endswith(b"\r\n"):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise RuntimeError("terminal closed early")
            screen += msg.data
    return int(screen.split(end, 1)[1].split(b"\r", 1)[0])


async def main() -> None:
    cert = make_certificate((HOST,))
    cluster = LabCluster()
    cluster.add_node("pve1")
    lab = LabServer(cluster, host=HOST, port=0, certificate=cert)
    await lab.start()
    cluster.add_guest(VMID, "lxc", "wiki", "pve1", status="running")
    config = parse_config(
        f"""
proxmox:
  - name: lab
    url: {lab.url}
    username: root@pam
    password: "{lab.credentials.root_password}"
    tls: {{fingerprint: "{lab.fingerprint}"}}
api:
  tokens:
    - {{name: bench, secret: {TOKEN}, scopes: [read, exec]}}
""",
        env={},
    )
    inventory = Inventory()
    inventory.publish(
        ClusterSnapshot.build(
            "lab", [guest()], [Node("lab", "pve1", "online", None, 0, 1, 0, 0, 1)]
        )
    )
    api_client = PveClient(config.proxmox[0])
    bare_client = PveClient(config.proxmox[0])
    ctx = make_context(config, inventory, Metrics(), True, clients={"lab": api_client})
    runner = web.AppRunner(build_app(ctx, setup=[guest_streams_setup()]), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = runner.addresses[0][1]
    fp = aiohttp.Fingerprint(bytes.fromhex(lab.fingerprint.replace(":", "")))
    via: list[float] = []
    bare: list[float] = []
    try:
        async with (
            aiohttp.ClientSession() as http,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=fp)) as direct,
        ):
            url = f"http://{HOST}:{port}/exec/pve1/{VMID}"
            headers = {"Authorization": f"Bearer {TOKEN}"}

            async def through_pxproxy() -> None:
                async with http.post(url, json={"argv": ["true"]}, headers=headers) as resp:
                    body = await resp.text()
                if body != "[exit status 0]\n":
                    raise RuntimeError(f"unexpected answer {resp.status}: {body!r}")

            # Warm both paths (tickets, TLS sessions, code paths) before measuring.
            await through_pxproxy()
            await bare_round_trip(lab, bare_client, direct)
            for _ in range(N):
                t0 = time.perf_counter()
                await through_pxproxy()
                via.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                status = await bare_round_trip(lab, bare_client, direct)
                bare.append(time.perf_counter() - t0)
                assert status == 0
    finally:
        await runner.cleanup()
        await api_client.close()
        await bare_client.close()
        await lab.stop()
    ratios = [v / b for v, b in zip(via, bare, strict=True)]
    print(f"exec round trip of `true` in CT {VMID}, N={N} each, alternating")
    row("through pxproxy, median", f"{statistics.median(via) * 1000:.1f} ms")
    row("bare termproxy script, median", f"{statistics.median(bare) * 1000:.1f} ms")
    row("median of per-pair ratios", f"{statistics.median(ratios):.2f}", "target <= 1.5")
    row("ratio of medians", f"{statistics.median(via) / statistics.median(bare):.2f}")


if __name__ == "__main__":
    asyncio.run(main())
