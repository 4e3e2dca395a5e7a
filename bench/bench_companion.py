"""Companion mode through the real Traefik, Caddy, nginx and HAProxy, each running exactly the
recipe `pxproxy integrations <kind>` prints:

- cost on a ready guest: requests/s through each proxy with its recipe ÷ the same proxy with a
  static route to the same guest (wrk, keep-alive, 8 and 64 connections, rounds rotated,
  medians), and the proxy's CPU µs per request (from /proc). Goal >= 0.97: pxproxy is not in
  the path. When the proxies all reach what the guest serves directly, the guest is the cap;
  the ratio then says less, and the CPU per request says more;
- convergence: from a guest's address change in the lab to each proxy answering from the new
  address, over 20 changes (p50/p99);
- wake through each proxy: from the first request to the guest's answer, minus the guest's boot
  time, against pxproxy's own proxy.

The lab runs in this process (so the bench can move a guest); pxproxy and the proxies are
subprocesses. Run it in a private network namespace, from the repository root:

    ip netns add bench; ip netns exec bench ip link set lo up
    ip netns exec bench python3 -m bench.bench_companion
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from pxproxy.config.loader import load_config
from pxproxy.integrations.recipes import recipe
from pxproxy.lab.certs import make_certificate
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabCluster, guest_ip
from tests.e2e.real_proxies import KINDS, Kind, RealProxy, free_port, running_proxy, static_config

from ._stack import stop_all
from ._util import cpu_ticks, row

SECONDS = 3
ROUNDS = 5
CONNECTIONS = (8, 64)
CHANGES = 20
WAKES = 5
TOKEN = "bench-companion-token-0123"
READY, SLEEPY = 100, 101
READY_HOST, SLEEPY_HOST = "bench.local", "sleepy.local"
BOOT_S = 0.3
MOVED = guest_ip(READY + 3 * 65536)
PARKED_SETTLE_S = 3.5


@dataclass
class Pair:
    kind: Kind
    recipe: RealProxy
    static: RealProxy
    label: str = ""  # how the rows name it (default: the kind)

    @property
    def name(self) -> str:
        return self.label or self.kind


async def wrk(url: str, host: str, connections: int) -> float:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{SECONDS}s", "-H", f"Host: {host}", url + "/"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out = (await proc.communicate())[0].decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk against {url} failed:\n{out}")
    return float(rps.group(1))


async def _ok(url: str, host: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.get(url + "/", headers={"Host": host}) as resp,
        ):
            return resp.status == 200
    return False


async def _until(predicate_url: str, host: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _ok(predicate_url, host):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{predicate_url} never answered for {host}")
        await asyncio.sleep(0.02)


async def proxied_by_pxproxy(api: str, host: str) -> float:
    """Requests pxproxy's own proxy served for `host` (any status), from its /metrics."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
        s.get(f"{api}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}) as resp,
    ):
        text = await resp.text()
    pattern = re.compile(
        r'^pxproxy_proxy_requests_total\{route="' + re.escape(host) + r'",[^}]*\} (\S+)$', re.M
    )
    return sum(float(m.group(1)) for m in pattern.finditer(text))


async def _until_direct(url: str, host: str, api: str, timeout_s: float = 60) -> None:
    """Until `url` answers 200 for `host` without pxproxy's proxy serving it (nginx's recipe
    falls back to pxproxy while its cached address refuses: that answer does not count)."""
    deadline = time.monotonic() + timeout_s
    while True:
        before = await proxied_by_pxproxy(api, host)
        if await _ok(url, host) and await proxied_by_pxproxy(api, host) == before:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} never answered directly for {host}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def stack(tmp: Path) -> AsyncIterator[tuple[LabCluster, dict[str, int], Path]]:
    cluster = LabCluster(cluster_name=None)
    cluster.add_node("pve1")
    cluster.add_guest(READY, "lxc", "bench", "pve1", status="running", static_ip=True)
    cluster.add_guest(
        SLEEPY, "lxc", "sleepy", "pve1", static_ip=True, boot_time_s=BOOT_S, shutdown_time_s=0.05
    )
    lab = LabServer(cluster, port=0, certificate=make_certificate(("127.0.0.1",)))
    await lab.start()
    await cluster.open()
    ports = {name: free_port() for name in ("proxy", "api", "dns", "metrics")}
    data = {
        "proxmox": [lab.proxmox_entry(poll_interval="200ms", ip_refresh="500ms")],
        "listen": {"proxy": f"127.0.0.1:{ports['proxy']}", "api": f"127.0.0.1:{ports['api']}"},
        "api": {"tokens": [{"name": "edge", "secret": TOKEN, "scopes": ["read"]}]},
        "dns": {"listen": f"127.0.0.1:{ports['dns']}", "zone": "pve.internal", "ttl": "1s"},
        "integrations": {
            "traefik": {"metrics_url": f"http://127.0.0.1:{ports['metrics']}/metrics"}
        },
        "routes": [
            {"host": READY_HOST, "guest": "bench", "port": 8080},
            {
                "host": SLEEPY_HOST,
                "guest": "sleepy",
                "port": 8080,
                "idle": {"timeout": "1s", "wake_timeout": "30s", "shutdown_timeout": "2s"},
            },
        ],
        "state": {"enabled": False},
        "log_level": "warning",
    }
    path = tmp / "pxproxy.yml"
    path.write_text(json.dumps(data), encoding="utf-8")
    procs: list[asyncio.subprocess.Process] = []
    try:
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pxproxy", "run", "-c", str(path)
            )
        )
        await _until(f"http://127.0.0.1:{ports['proxy']}", READY_HOST)
        yield cluster, ports, path
    finally:
        await stop_all(procs)
        await lab.stop()


@contextlib.asynccontextmanager
async def pair(
    kind: Kind, tmp: Path, config_path: Path, ports: dict[str, int], *, metrics: bool = True
) -> AsyncIterator[Pair]:
    config = load_config(str(config_path))
    if not metrics:
        # The recipe as printed when no route reads Traefik's metrics: no metrics at all.
        traefik = config.integrations.traefik.model_copy(update={"metrics_url": None})
        integrations = config.integrations.model_copy(update={"traefik": traefik})
        config = config.model_copy(update={"integrations": integrations})
    text = recipe(
        kind,
        config,
        config_path=str(config_path),
        listen=f"127.0.0.1:{(rp := free_port())}",
        poll_interval="1s",
    )
    sp = free_port()
    label = kind if metrics else f"{kind} (no metrics)"
    where = tmp / label.replace(" ", "-").replace("(", "").replace(")", "")
    static_dir = where.with_name(f"{where.name}-static")
    baseline = static_config(
        kind, READY_HOST, f"{guest_ip(READY)}:8080", f"127.0.0.1:{sp}", static_dir
    )
    extra = (ports["metrics"],) if kind == "traefik" and metrics else ()
    async with (
        running_proxy(kind, text, where, rp, token=TOKEN, extra_ports=extra) as r,
        running_proxy(kind, baseline, static_dir, sp) as s,
    ):
        await _until(r.url, READY_HOST)
        await _until(s.url, READY_HOST)
        yield Pair(kind, r, s, "" if metrics else label)


async def _measure(proxy: RealProxy, connections: int) -> tuple[float, float]:
    """Requests/s through `proxy`, and its CPU µs per request."""
    before = cpu_ticks(proxy.pid)
    rps = await wrk(proxy.url, READY_HOST, connections)
    seconds = (cpu_ticks(proxy.pid) - before) / os.sysconf("SC_CLK_TCK")
    return rps, seconds * 1e6 / (rps * SECONDS)


async def cost(pairs: list[Pair], direct: str, api: str) -> None:
    """Each round runs every proxy's recipe and static variants back to back (which goes
    first alternates; the proxies' order rotates), so a ratio compares two runs under the
    same load of the machine; the figure is the median of the per-round ratios."""
    rps: dict[tuple[str, str, int], list[float]] = {}
    cpu: dict[tuple[str, str, int], list[float]] = {}
    ratios: dict[tuple[str, int], list[float]] = {}
    direct_rps: dict[int, list[float]] = {}
    through_pxproxy = await proxied_by_pxproxy(api, READY_HOST)
    for rnd in range(ROUNDS):
        order = pairs[rnd % len(pairs) :] + pairs[: rnd % len(pairs)]
        for c in CONNECTIONS:
            direct_rps.setdefault(c, []).append(await wrk(direct, READY_HOST, c))
            for p in order:
                variants = [("recipe", p.recipe), ("static", p.static)]
                got: dict[str, float] = {}
                for variant, proxy in variants if rnd % 2 == 0 else variants[::-1]:
                    r, us = await _measure(proxy, c)
                    got[variant] = r
                    rps.setdefault((p.name, variant, c), []).append(r)
                    cpu.setdefault((p.name, variant, c), []).append(us)
                ratios.setdefault((p.name, c), []).append(got["recipe"] / got["static"])
    through_pxproxy = await proxied_by_pxproxy(api, READY_HOST) - through_pxproxy
    print(f"cost on a ready guest: wrk keep-alive, {SECONDS}s, {ROUNDS} paired rounds, medians")
    row("requests pxproxy's proxy served meanwhile", f"{through_pxproxy:.0f}", "want 0")
    for c in CONNECTIONS:
        d = statistics.median(direct_rps[c])
        row(f"c{c} guest direct (the upstream's own ceiling)", f"{d:,.0f} req/s")
        for p in pairs:
            r = statistics.median(rps[(p.name, "recipe", c)])
            s = statistics.median(rps[(p.name, "static", c)])
            rc = statistics.median(cpu[(p.name, "recipe", c)])
            sc = statistics.median(cpu[(p.name, "static", c)])
            each = ratios[(p.name, c)]
            cap = "  (upstream is the cap)" if max(r, s) >= 0.9 * d else ""
            row(f"c{c} {p.name}: recipe / static req/s", f"{r:,.0f} / {s:,.0f}")
            row(f"c{c} {p.name}: CPU us/request recipe / static", f"{rc:.0f} / {sc:.0f}")
            row(
                f"c{c} {p.name}: ratio recipe / static",
                f"{statistics.median(each):.3f}",
                f"goal >= 0.97 (rounds {min(each):.2f}..{max(each):.2f}){cap}",
            )


async def convergence(cluster: LabCluster, pairs: list[Pair], api: str) -> None:
    print(f"convergence: lab address change -> the proxy answers from it, {CHANGES} changes")
    for p in pairs:
        took: list[float] = []
        for i in range(CHANGES):
            await _until_direct(p.recipe.url, READY_HOST, api)
            target = MOVED if i % 2 == 0 else guest_ip(READY)
            changed = time.monotonic()
            await cluster.readdress(READY, target)
            # The old address stops listening at once: a direct 200 can only come from the
            # new one.
            await _until_direct(p.recipe.url, READY_HOST, api)
            took.append(time.monotonic() - changed)
        took.sort()
        p99 = took[min(len(took) - 1, round(0.99 * (len(took) - 1)))]
        row(f"{p.kind}: p50 / p99", f"{statistics.median(took):.2f} / {p99:.2f} s")
    await cluster.readdress(READY, guest_ip(READY))


async def _asleep(cluster: LabCluster, api: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(3000):
            async with session.get(f"{api}/api/v1/routes", headers=auth) as resp:
                states = {tuple(r["host"]): r["state"] for r in await resp.json()}
            if cluster.guests[SLEEPY].status == "stopped" and states[(SLEEPY_HOST,)] == "asleep":
                return
            await asyncio.sleep(0.05)
    raise RuntimeError("the sleepy guest never went back to sleep")


async def wakes(cluster: LabCluster, pairs: list[Pair], ports: dict[str, int]) -> None:
    api = f"http://127.0.0.1:{ports['api']}"
    targets = [("pxproxy (built-in)", f"http://127.0.0.1:{ports['proxy']}")] + [
        (p.kind, p.recipe.url) for p in pairs
    ]
    print(f"wake through each proxy: first request -> guest's answer minus {BOOT_S}s boot")
    results: dict[str, list[float]] = {}
    for _ in range(WAKES):
        for name, url in targets:
            await _asleep(cluster, api)
            # The proxies cannot be asked whether they have the parked route without waking
            # the guest: give them a DNS TTL (1s) or Traefik's provider poll (1s) plus its
            # providersThrottleDuration (2s), and margin.
            await asyncio.sleep(PARKED_SETTLE_S)
            started = time.monotonic()
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s,
                s.get(url + "/", headers={"Host": SLEEPY_HOST, "Accept": "*/*"}) as resp,
            ):
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{name}: wake answered {resp.status}")
            results.setdefault(name, []).append(time.monotonic() - started - BOOT_S)
    base = statistics.median(results["pxproxy (built-in)"])
    for name, values in results.items():
        med = statistics.median(values)
        row(f"{name}: median overhead, max", f"{med * 1e3:.0f} ms, {max(values) * 1e3:.0f} ms")
        if name != "pxproxy (built-in)":
            row(f"{name}: minus the built-in proxy's", f"{(med - base) * 1e3:+.0f} ms")


async def main() -> None:
    for tool in ("wrk", *KINDS):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: see bench/setup.sh and scripts/test")
    with tempfile.TemporaryDirectory(prefix="pxproxy-companion-") as name:
        tmp = Path(name)
        async with stack(tmp) as (cluster, ports, config_path), contextlib.AsyncExitStack() as es:
            pairs = [await es.enter_async_context(pair(k, tmp, config_path, ports)) for k in KINDS]
            api = f"http://127.0.0.1:{ports['api']}"
            if "--no-cost" not in sys.argv:
                # Traefik twice: with the metrics `activity: {source: traefik}` reads, and as
                # its recipe is printed when no route reads them.
                plain = await es.enter_async_context(
                    pair("traefik", tmp, config_path, ports, metrics=False)
                )
                await cost([*pairs, plain], f"http://{guest_ip(READY)}:8080", api)
            await convergence(cluster, pairs, api)
            await wakes(cluster, pairs, ports)


if __name__ == "__main__":
    asyncio.run(main())
