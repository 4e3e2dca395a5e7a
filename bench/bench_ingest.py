"""Snapshot ingest of a 10,000-guest /cluster/resources body: parse + records + indexes,
divided by a plain json.loads of the same body. Target: <= 3.

    python -m bench.bench_ingest
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pxproxy.inventory.ingest import make_nodes, parse_resources
from pxproxy.inventory.snapshot import ClusterSnapshot

from ._util import row
from .fake_cluster import make_resources

GUESTS = 10_000
ROUNDS = 15


def best_of(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    """Fastest of several runs: the least disturbed by the shared machine."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def ingest(body: bytes) -> ClusterSnapshot:
    resources = parse_resources(body, "bench")
    nodes = make_nodes("bench", resources.nodes, {})
    return ClusterSnapshot.build("bench", resources.guests, nodes)


def main() -> None:
    body = json.dumps({"data": make_resources(GUESTS)}).encode()
    snap = ingest(body)
    assert len(snap.guests) == GUESTS
    # Interleave the two so drift on a noisy machine hits both alike.
    loads = ours = float("inf")
    for _ in range(3):
        loads = min(loads, best_of(lambda: json.loads(body)))
        ours = min(ours, best_of(lambda: ingest(body)))
    print(f"snapshot ingest, {GUESTS} guests, body {len(body) / 1e6:.1f} MB")
    row("json.loads", f"{loads * 1e3:.1f} ms")
    row("pxproxy ingest (parse, records, indexes)", f"{ours * 1e3:.1f} ms")
    row("ratio ingest / json.loads", f"{ours / loads:.2f}", "target <= 3")


if __name__ == "__main__":
    main()
