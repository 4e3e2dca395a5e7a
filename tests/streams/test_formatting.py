"""Stats formatting: IEC units, the text line, NDJSON fields, PVE 7 string numbers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pxproxy.pve.models import parse_guest_status, parse_node_status
from pxproxy.streams import formatting
from pxproxy.streams.formatting import (
    GuestSample,
    NodeSample,
    error_json,
    error_line,
    guest_json,
    guest_line,
    iec,
    node_json,
    rates,
)


def parse_guest(data: dict[str, Any], time: float) -> GuestSample:
    """A Proxmox answer through pve's typed model into a sample, as the stats hub does."""
    return formatting.parse_guest(parse_guest_status(data), time)


def parse_node(node: str, data: dict[str, Any], time: float) -> NodeSample:
    return formatting.parse_node(node, parse_node_status(data), time)


GiB = 1024**3
MiB = 1024**2

SIZE = r"\d+(?:\.\d)?(?:B|KiB|MiB|GiB|TiB|PiB|EiB)"
LINE_RE = re.compile(
    rf"^(?P<status>[a-z]+)\|(?P<cpu>\d+\.\d)%\|(?P<mem>{SIZE})/(?P<maxmem>{SIZE})\|"
    rf"(?P<memp>\d+\.\d\d)%\|(?P<netin>{SIZE})/(?P<netout>{SIZE})\|"
    rf"(?P<read>{SIZE})/(?P<write>{SIZE})$"
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0B"),
        (-5, "0B"),
        (float("nan"), "0B"),
        (1, "1B"),
        (1023, "1023B"),
        (1024, "1KiB"),
        (1536, "1.5KiB"),
        (512 * MiB, "512MiB"),
        (20 * GiB, "20GiB"),
        (int(9.6 * GiB), "9.6GiB"),
        (1024 * MiB - 1, "1GiB"),  # 1023.99 MiB rounds up into the next unit
        (1024**4 * 3, "3TiB"),
        (1024**7 * 5, "5120EiB"),  # the largest unit keeps growing
    ],
)
def test_iec(value: float, text: str) -> None:
    assert iec(value) == text


def seed_sample() -> GuestSample:
    return parse_guest(
        {
            "status": "running",
            "vmid": 101,
            "name": "wiki",
            "cpu": 0.311,
            "cpus": 4,
            "mem": int(9.6 * GiB),
            "maxmem": 20 * GiB,
            "netin": int(4.7 * GiB),
            "netout": int(3.3 * GiB),
            "diskread": 25 * GiB,
            "diskwrite": 36 * GiB,
            "uptime": 1000,
        },
        time=1000.0,
    )


def test_seed_line() -> None:
    line = guest_line(seed_sample())
    assert line == "running|31.1%|9.6GiB/20GiB|48.00%|4.7GiB/3.3GiB|25GiB/36GiB"
    assert LINE_RE.match(line)


def test_pve7_string_numbers_and_paused_vm() -> None:
    sample = parse_guest(
        {
            "status": "running",
            "qmpstatus": "paused",
            "vmid": "100",
            "cpu": "0.5",
            "mem": "1073741824",
            "maxmem": "2147483648",
            "netin": "1024",
            "netout": "bogus",
        },
        time=0.0,
    )
    assert (sample.vmid, sample.status, sample.cpu, sample.mem) == (100, "paused", 0.5, GiB)
    assert sample.netout == 0
    assert guest_line(sample) == "paused|50.0%|1GiB/2GiB|50.00%|1KiB/0B|0B/0B"


def test_missing_fields_and_zero_limit() -> None:
    sample = parse_guest({}, time=0.0)
    line = guest_line(sample)
    assert line == "unknown|0.0%|0B/0B|0.00%|0B/0B|0B/0B"
    assert LINE_RE.match(line)
    data = json.loads(guest_json(sample, rates(None, sample)))
    assert data["mem_percent"] == 0.0
    assert data["netin_rate"] is None


def test_ndjson_fields_and_rates() -> None:
    a = seed_sample()
    b = parse_guest(
        {
            "status": "running",
            "vmid": 101,
            "cpu": 0.1,
            "cpus": 4,
            "mem": GiB,
            "maxmem": 20 * GiB,
            "netin": a.netin + 2000,
            "netout": a.netout + 1000,
            "diskread": a.diskread + 4096,
            "diskwrite": 0,  # counter reset (guest restarted)
        },
        time=1002.0,
    )
    data = json.loads(guest_json(b, rates(a, b), "lxc/101"))
    assert data["ref"] == "lxc/101"
    assert data["netin"] == a.netin + 2000
    assert (data["netin_rate"], data["netout_rate"], data["diskread_rate"]) == (1000, 500, 2048)
    assert data["diskwrite_rate"] is None
    assert data["cpu"] == 0.1
    assert data["cpu_percent"] == 10.0
    assert set(data) >= {"time", "status", "mem", "maxmem", "mem_percent", "uptime", "cpus"}
    # A sample at the same time gives no rates rather than a division by zero.
    assert rates(b, b).netin is None


def test_node_json_from_pve7_sample() -> None:
    raw = {
        "cpu": 0.00260552371026576,
        "pveversion": "pve-manager/7.4-16/0f39f621",
        "kversion": "Linux 5.15.108-1-pve #1 SMP",
        "uptime": 2501631,
        "wait": 0,
        "cpuinfo": {"mhz": "3400.000", "cpus": 8, "cores": 4},
        "loadavg": ["0.05", "0.10", "bad"],
        "memory": {"total": 65919459328, "free": 57824059392, "used": 8095399936},
        "rootfs": {"total": 100, "free": 75, "used": 25, "avail": 75},
        "swap": {"total": 0, "free": 0, "used": 0},
    }
    data = json.loads(node_json(parse_node("node1", raw, time=5.0)))
    assert data["loadavg"] == [0.05, 0.1, 0.0]
    assert data["cpus"] == 8
    assert "available" not in data["memory"]  # PVE 7 has none; not invented
    assert data["memory"]["used"] == 8095399936
    assert data["rootfs_percent"] == 25.0
    assert data["pveversion"].startswith("pve-manager/7.4")
    assert data["uptime"] == 2501631
    empty = json.loads(node_json(parse_node("n", {"memory": "x"}, time=0.0)))
    assert (empty["memory"], empty["mem_percent"], empty["loadavg"]) == ({}, 0.0, [])


def test_error_renderings() -> None:
    line = error_line("node pve1 | offline\nreally")
    assert line == "error: node pve1 / offline really"
    assert not LINE_RE.match(line)
    assert json.loads(error_json("gone", 1.0, 404)) == {"time": 1.0, "error": "gone", "status": 404}
