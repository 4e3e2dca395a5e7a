"""py-spy on a running Python process: a raw (collapsed-stack) profile and its summary as text:
self time by area (pxproxy, aiohttp's server and client sides, prometheus_client, the event
loop), the top self-time frames and files, and pxproxy's own functions by inclusive time.

A frame's self time includes the C it calls (py-spy samples Python frames only): a frame
that writes to a transport is charged for the send; `Runner.run` for uvloop's own work."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE_HZ = 100
# "function (path/file.py:line)"; py-spy -F gives each function's first line.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+):\d+\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    self_areas: list[tuple[str, int]]
    self_frames: list[tuple[str, int]]
    self_modules: list[tuple[str, int]]
    own_inclusive: list[tuple[str, int]]  # frames in `own` files, once per sample


async def record(pid: int, seconds: float, out: Path) -> None:
    """py-spy record of `pid` for `seconds` into `out` (raw collapsed stacks, by function)."""
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    proc = await asyncio.create_subprocess_exec(
        *("py-spy", "record", "--pid", str(pid), "-d", str(round(seconds))),
        # Nonblocking: the process is not paused for each sample, so the load is not slowed.
        *("-r", str(RATE_HZ), "-F", "--nonblocking", "--format", "raw", "-o", str(out)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    text = (await proc.communicate())[0].decode(errors="replace")
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        raise RuntimeError(f"py-spy record failed ({proc.returncode}):\n{text}")


# Frames every sample of the daemon has: the start-up chain down to the event loop.
_STARTUP = ("pxproxy/__main__.py", "pxproxy/cli.py", "pxproxy/runtime.py")


def _module(frame: str) -> str:
    m = _FRAME.match(frame)
    return m.group("file") if m else frame


def _area(module: str) -> str:
    if module.startswith("pxproxy/"):
        return "pxproxy"
    if module.startswith("aiohttp/"):
        name = module.removeprefix("aiohttp/")
        client = name.startswith(("client", "connector"))
        return "aiohttp client side" if client else "aiohttp server side (and shared)"
    if module.startswith("prometheus_client/"):
        return "prometheus_client"
    if module.startswith(("asyncio/", "uvloop/")):
        return "event loop (asyncio, uvloop)"
    return "other (stdlib, threads)"


def summarise(text: str, own: str = "pxproxy/", top: int = 20) -> Profile:
    """The profile in `text` (py-spy's raw format: `frame;frame;leaf count` per line)."""
    self_areas: Counter[str] = Counter()
    self_frames: Counter[str] = Counter()
    self_modules: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        self_frames[frames[-1]] += count
        self_modules[_module(frames[-1])] += count
        self_areas[_area(_module(frames[-1]))] += count
        for frame in set(frames):
            module = _module(frame)
            if module.startswith(own) and module not in _STARTUP:
                own_inclusive[frame] += count
    return Profile(
        samples,
        self_areas.most_common(),
        self_frames.most_common(top),
        self_modules.most_common(top),
        own_inclusive.most_common(top),
    )


def print_profile(profile: Profile) -> None:
    total = max(profile.samples, 1)
    print(f"  {profile.samples} samples at {RATE_HZ} Hz (idle excluded)")
    for title, rows in (
        ("self time by area", profile.self_areas),
        ("top self-time frames", profile.self_frames),
        ("self time by file", profile.self_modules),
        ("pxproxy's own frames, inclusive", profile.own_inclusive),
    ):
        print(f"  {title}:")
        for frame, count in rows:
            print(f"    {100 * count / total:5.1f} %  {frame}")
