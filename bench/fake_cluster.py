"""A minimal, fast Proxmox API stand-in for benchmarks: N guests, fixed latency per request.

fakepve validates every request against PVE's schema, which is right for conformance tests but
costs more CPU per request than pxproxy itself; a benchmark of pxproxy's own cost needs a peer
that spends nothing but the configured latency. Serves plain HTTP on loopback.

    python -m bench.fake_cluster --guests 1000 --latency 0.02 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from typing import Any

from aiohttp import web

NODES = ("pve1", "pve2", "pve3")


def guest_ip(vmid: int) -> str:
    return f"10.{vmid // 65536 % 256}.{vmid // 256 % 256}.{vmid % 256}"


def make_resources(guests: int, running_fraction: float = 0.7) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = []
    for i in range(guests):
        vmid = 100 + i
        kind = "lxc" if i % 2 == 0 else "qemu"
        running = (i % 100) < running_fraction * 100
        data.append(
            {
                "id": f"{kind}/{vmid}",
                "type": kind,
                "vmid": vmid,
                "node": NODES[i % len(NODES)],
                "name": f"guest-{vmid}",
                "status": "running" if running else "stopped",
                "template": 0,
                "uptime": 86400 + i if running else 0,
                "maxcpu": 2,
                "cpu": 0.0123,
                "maxmem": 2147483648,
                "mem": 1073741824 if running else 0,
                "maxdisk": 34359738368,
                "disk": 2147483648,
                "netin": 123456789 + i,
                "netout": 987654321 + i,
                "diskread": 555555555,
                "diskwrite": 444444444,
                "tags": "web;alias.g" + str(vmid) if i % 5 == 0 else "",
            }
        )
    data += [
        {"id": f"node/{n}", "type": "node", "node": n, "status": "online", "maxcpu": 16}
        for n in NODES
    ]
    return data


class FakeCluster:
    def __init__(self, guests: int, latency_s: float, running_fraction: float = 0.7) -> None:
        self.latency_s = latency_s
        self.resources = make_resources(guests, running_fraction)
        self.body = json.dumps({"data": self.resources}).encode()
        self.running = {g["vmid"]: g["status"] == "running" for g in self.resources if "vmid" in g}
        self.counts: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/_stats", self._stats)
        r.add_post("/_reset", self._reset)
        r.add_get("/api2/json/version", self._version)
        r.add_get("/api2/json/cluster/resources", self._resources)
        r.add_get("/api2/json/cluster/status", self._status)
        r.add_get("/api2/json/nodes/{node}/lxc/{vmid}/interfaces", self._lxc_interfaces)
        r.add_get("/api2/json/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces", self._agent)
        r.add_get("/api2/json/nodes/{node}/{kind}/{vmid}/config", self._config)
        return app

    async def _pause(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.counts))

    async def _reset(self, request: web.Request) -> web.Response:
        self.counts.clear()
        return web.json_response({})

    async def _version(self, request: web.Request) -> web.Response:
        await self._pause("version")
        return web.json_response({"data": {"version": "9.0.10", "release": "9.0"}})

    async def _resources(self, request: web.Request) -> web.Response:
        await self._pause("resources")
        return web.Response(body=self.body, content_type="application/json")

    async def _status(self, request: web.Request) -> web.Response:
        await self._pause("status")
        nodes = [
            {"type": "node", "name": n, "ip": f"192.0.2.{i + 1}", "online": 1, "nodeid": i + 1}
            for i, n in enumerate(NODES)
        ]
        return web.json_response({"data": [{"type": "cluster", "name": "bench"}, *nodes]})

    async def _lxc_interfaces(self, request: web.Request) -> web.Response:
        await self._pause("interfaces")
        vmid = int(request.match_info["vmid"])
        if not self.running.get(vmid):
            return web.json_response({"data": None})
        ip = guest_ip(vmid)
        return web.json_response(
            {
                "data": [
                    {"name": "lo", "inet": "127.0.0.1/8"},
                    {
                        "name": "eth0",
                        "inet": f"{ip}/16",
                        "ip-addresses": [
                            {"ip-address-type": "inet", "ip-address": ip, "prefix": "16"}
                        ],
                    },
                ]
            }
        )

    async def _agent(self, request: web.Request) -> web.Response:
        await self._pause("agent")
        ip = guest_ip(int(request.match_info["vmid"]))
        result = [
            {
                "name": "eth0",
                "ip-addresses": [{"ip-address": ip, "ip-address-type": "ipv4", "prefix": 16}],
            }
        ]
        return web.json_response({"data": {"result": result}})

    async def _config(self, request: web.Request) -> web.Response:
        await self._pause("config")
        return web.json_response({"data": {"net0": "name=eth0,bridge=vmbr0,ip=dhcp"}})


async def serve(guests: int, latency_s: float, port: int, running: float) -> None:
    fake = FakeCluster(guests, latency_s, running)
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--guests", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--running", type=float, default=0.7, help="share of running guests")
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.guests, args.latency, args.port, args.running))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
