"""`pxproxy start|stop|shutdown|reboot|suspend|resume REF [--wait]` and `pxproxy wake REF`.

A power action prints the Proxmox task it started. With --wait it asks the API to wait for the
task (`?wait=1`): the API has no task-progress endpoint, so while the task runs a progress line
per second goes to stderr (one line rewritten in place on a terminal), and the task's result
ends the command. `wake` follows the API's NDJSON stages of an idle-watch wake until ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from .client_http import EXIT_API_ERROR, ApiClient, CliError, lines, say, seg

if TYPE_CHECKING:
    import aiohttp

POWER_ACTIONS = ("start", "stop", "shutdown", "reboot", "suspend", "resume")
# The API's own bound on ?wait=1 unless --timeout says otherwise.
DEFAULT_WAIT_S = 120.0
# On top of the task's timeout: the API answers 504 itself once that has passed.
WAIT_READ_MARGIN_S = 30.0
PROGRESS_INTERVAL_S = 1.0


async def power(
    client: ApiClient, action: str, ref: str, *, wait: bool, timeout_s: float | None
) -> int:
    path = f"/api/v1/guests/{seg(ref)}/{action}"
    if not wait:
        doc = await client.json("POST", path)
        say(f"task {_field(doc, 'upid')} started ({action} of {_field(doc, 'ref')})")
        return 0
    params = [("wait", "1")]
    if timeout_s is not None:
        params.append(("timeout", f"{timeout_s:g}s"))
    bound = (timeout_s or DEFAULT_WAIT_S) + WAIT_READ_MARGIN_S
    ticker = asyncio.create_task(_progress(f"{action} {ref}"), name="power-progress")
    try:
        doc = await client.json("POST", path, params=params, read_timeout_s=bound)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    duration = doc.get("duration_s") if isinstance(doc, dict) else None
    took = f" in {duration:g}s" if isinstance(duration, int | float) else ""
    what = f"{action} of {_field(doc, 'ref')}"
    say(f"task {_field(doc, 'upid')} {_field(doc, 'exitstatus')}{took} ({what})")
    return 0


def _field(doc: Any, key: str) -> str:
    value = doc.get(key) if isinstance(doc, dict) else None
    return str(value) if value not in (None, "") else "?"


async def _progress(what: str) -> None:
    """A line per second while the API waits for the task; on a terminal, one line in place."""
    tty = sys.stderr.isatty()
    started = time.monotonic()
    try:
        while True:
            seconds = time.monotonic() - started
            text = f"{what}: waiting for the Proxmox task ({seconds:.0f}s)"
            print(f"\r{text}\033[K" if tty else text, end="" if tty else "\n", file=sys.stderr)
            sys.stderr.flush()
            await asyncio.sleep(PROGRESS_INTERVAL_S)
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr)
            sys.stderr.flush()


async def wake(client: ApiClient, ref: str) -> int:
    """Each stage as `  1.2s  waking: starting`; exit 0 once ready, 1 if the wake failed."""
    last: dict[str, Any] = {}

    async def handle(resp: aiohttp.ClientResponse) -> int:
        async for raw in lines(resp):
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            last.clear()
            last.update(event)
            elapsed = event.get("elapsed_s")
            stamp = f"{elapsed:6.1f}s" if isinstance(elapsed, int | float) else "      ?"
            state = event.get("state")
            if state == "ready":
                say(
                    f"{stamp}  ready"
                    + (" (it was already awake)" if event.get("already_ready") else "")
                )
            elif state == "failed":
                say(f"{stamp}  failed: {event.get('error') or event.get('step')}")
            else:
                say(f"{stamp}  {state}: {event.get('step')}")
        return 0

    # A wake may sit in one stage for minutes (a slow boot): no read timeout; wake_timeout
    # bounds it on the daemon's side.
    await client.call("POST", f"/api/v1/guests/{seg(ref)}/wake", handle, read_timeout_s=None)
    if last.get("state") == "ready":
        return 0
    if last.get("state") == "failed":
        retry = last.get("retry_after_s")
        hint = f" (retry in {retry:g}s)" if isinstance(retry, int | float) and retry > 0 else ""
        raise CliError(f"{ref} did not wake: {last.get('error')}{hint}", EXIT_API_ERROR)
    raise CliError("the wake stream ended before the guest was ready", EXIT_API_ERROR)
