"""The node stats text line: the guest line's shape, rootfs and load, and the CPU model."""

from __future__ import annotations

import json

from pxproxy.streams.formatting import NodeSample, node_json, node_line

GiB = 1024**3


def sample(**overrides: object) -> NodeSample:
    data: dict[str, object] = {
        "time": 1.0,
        "node": "pve1",
        "cpu": 0.0325,
        "cpus": 8,
        "wait": 0.0,
        "memory": {"total": 16 * GiB, "used": 4 * GiB},
        "swap": {},
        "rootfs": {"total": 100 * GiB, "used": 13 * GiB},
        "loadavg": (0.32, 0.29, 0.255),
        "uptime": 100,
        "pveversion": "pve-manager/9.0.10",
        "kversion": "Linux 6.14",
        "cpu_model": "AMD  EPYC|7302   16-Core Processor",
    }
    data.update(overrides)
    return NodeSample(**data)  # type: ignore[arg-type]


def test_node_line() -> None:
    assert node_line(sample()) == (
        "online|3.2%|4GiB/16GiB|25.00%|13GiB/100GiB|0.32 0.29 0.26|"
        "8 x AMD EPYC/7302 16-Core Processor"
    )


def test_node_line_with_nothing_known() -> None:
    line = node_line(sample(memory={}, rootfs={}, loadavg=(), cpu_model="", cpus=0))
    assert line == "online|3.2%|0B/0B|0.00%|0B/0B|-|0 x unknown CPU"


def test_node_json_has_the_cpu_model() -> None:
    assert json.loads(node_json(sample()))["cpu_model"] == "AMD  EPYC|7302   16-Core Processor"
