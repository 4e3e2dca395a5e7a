"""`pxproxy stats | journal | tail | exec`: the streaming endpoints, printed as they arrive.

Every guest is named by any ref (name, vmid, node/vmid, cluster:vmid). The CLI resolves it
with `GET /api/v1/guests/{ref}` (an ambiguous ref: the API's candidates are listed, exit 1)
and then calls the node/vmid endpoint. `journal` and `tail` also take a node: a ref that is
no guest's but a node's name (or alias, or cluster:node) means the node; `--node` says so
outright, for a node that shares its name with a guest.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client_format import STATS_HEADER_LINE, format_stats_line
from .client_http import EXIT_API_ERROR, ApiClient, CliError, lines, seg, write

if TYPE_CHECKING:
    import aiohttp

# Stats send a line every second: a minute of silence means the stream is dead.
STATS_READ_TIMEOUT_S = 60.0

_EXIT_LINE_RE = re.compile(rb"\[exit status (-?\d+)\]\r?")
_VMID_RE = re.compile(r"\d{1,9}")
# Keys an NDJSON exec event may carry its output under; stderr ones go to our stderr.
_OUTPUT_KEYS = ("line", "data", "text", "output", "out", "stdout", "stderr", "err")
_STDERR_KEYS = ("stderr", "err")


# -- refs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestTarget:
    ref: str  # cluster:vmid
    node: str
    vmid: int
    type: str

    @property
    def path(self) -> str:
        return f"{seg(self.node)}/{self.vmid}"


@dataclass(frozen=True, slots=True)
class NodeTarget:
    name: str  # as the API takes it: the name, or cluster:name

    @property
    def path(self) -> str:
        return seg(self.name)


async def resolve_guest(client: ApiClient, ref: str) -> GuestTarget:
    """The guest a ref names, through the API; its 404 and 409 (candidates) are CliErrors."""
    doc = await client.json("GET", f"/api/v1/guests/{seg(ref)}")
    if not isinstance(doc, dict) or not isinstance(doc.get("vmid"), int):
        raise CliError(f"the API answered ref {ref!r} with no guest", EXIT_API_ERROR)
    return GuestTarget(
        f"{doc.get('cluster')}:{doc['vmid']}", str(doc.get("node")), doc["vmid"], str(doc["type"])
    )


async def resolve_target(client: ApiClient, ref: str, *, node: bool) -> GuestTarget | NodeTarget:
    """A guest first; if no guest has that name, a node. A node/vmid or a vmid is a guest's."""
    if node:
        return NodeTarget(ref)
    try:
        return await resolve_guest(client, ref)
    except CliError as exc:
        if exc.status != 404 or "/" in ref or _VMID_RE.fullmatch(ref.rpartition(":")[2]):
            raise
    nodes = await client.json("GET", "/api/v1/nodes")
    found = [n for n in nodes if isinstance(n, dict) and _names_node(ref, n)]
    if not found:
        raise CliError(f"no guest or node matches {ref!r}", EXIT_API_ERROR, 404)
    if len(found) > 1:
        where = ", ".join(f"{n.get('cluster')}:{n.get('name')}" for n in found)
        raise CliError(
            f"{len(found)} clusters have a node {ref!r}: {where}; use cluster:node",
            EXIT_API_ERROR,
            409,
        )
    return NodeTarget(ref)


def _names_node(ref: str, node: dict[str, Any]) -> bool:
    want = ref.strip().lower()
    name = str(node.get("name", "")).lower()
    aliases = [str(a).lower() for a in node.get("aliases") or []]
    return want in (name, f"{str(node.get('cluster', '')).lower()}:{name}", *aliases)


def _no_follow_note(command: str, target: GuestTarget | NodeTarget, follow: bool) -> bool:
    """QEMU guests answer through the guest agent, which cannot stream: history only."""
    if follow and isinstance(target, GuestTarget) and target.type == "qemu":
        print(
            f"pxproxy {command}: {target.ref} is a QEMU VM; the guest agent cannot follow,"
            " so this shows the history only",
            file=sys.stderr,
        )
        return False
    return follow


# -- stats --------------------------------------------------------------------------------------


async def stats(client: ApiClient, ref: str, *, once: bool, raw: bool) -> int:
    params: list[tuple[str, str]] = []
    if once:
        params.append(("stream", "0"))
    if raw:
        params.append(("format", "json"))

    async def handle(resp: aiohttp.ClientResponse) -> int:
        out = sys.stdout.buffer
        header = False
        async for line in lines(resp):
            if raw:
                write(out, line + b"\n")
                continue
            row = format_stats_line(line.decode("utf-8", "replace"))
            if row is None:  # not the documented shape: show it as sent
                write(out, line + b"\n")
                continue
            if not header:
                write(out, (STATS_HEADER_LINE + "\n").encode())
                header = True
            write(out, (row + "\n").encode())
        return 0

    return await client.call(
        "GET", f"/stats/{seg(ref)}", handle, params=params, read_timeout_s=STATS_READ_TIMEOUT_S
    )


# -- journal and tail ---------------------------------------------------------------------------


async def _copy(resp: aiohttp.ClientResponse) -> int:
    out = sys.stdout.buffer
    async for chunk in resp.content.iter_any():
        write(out, chunk)
    return 0


async def journal(
    client: ApiClient,
    ref: str,
    *,
    node: bool,
    limit: int | None,
    units: Sequence[str],
    follow: bool,
) -> int:
    target = await resolve_target(client, ref, node=node)
    follow = _no_follow_note("journal", target, follow)
    params: list[tuple[str, str]] = [("service", unit) for unit in units]
    if limit is not None:
        params.append(("limit", str(limit)))
    if not follow:
        params.append(("follow", "0"))
    # A quiet journal may say nothing for hours: no read timeout.
    return await client.call(
        "GET", f"/journal/{target.path}", _copy, params=params, read_timeout_s=None
    )


async def tail(
    client: ApiClient,
    ref: str,
    files: Sequence[str],
    *,
    node: bool,
    limit: int | None,
    follow: bool,
) -> int:
    target = await resolve_target(client, ref, node=node)
    follow = _no_follow_note("tail", target, follow)
    params: list[tuple[str, str]] = [("file", f) for f in files]
    if limit is not None:
        params.append(("limit", str(limit)))
    if not follow:
        params.append(("follow", "0"))
    return await client.call(
        "GET", f"/tail/{target.path}", _copy, params=params, read_timeout_s=None
    )


# -- exec ---------------------------------------------------------------------------------------


async def exec_(client: ApiClient, ref: str, argv: list[str]) -> int:
    target = await resolve_guest(client, ref)

    async def handle(resp: aiohttp.ClientResponse) -> int:
        if resp.content_type in ("application/x-ndjson", "application/json"):
            status = await _exec_ndjson(resp)
        else:  # a daemon that answered text: the last line is "[exit status N]"
            status = await _exec_text(resp)
        if status is None:
            raise CliError("the output ended without the command's exit status", EXIT_API_ERROR)
        # Shells report statuses as 0..255; keep what the command said within that.
        return status & 0xFF

    return await client.call(
        "POST",
        f"/exec/{target.path}",
        handle,
        params=[("format", "json")],
        body={"argv": argv},
        read_timeout_s=None,
    )


async def _exec_ndjson(resp: aiohttp.ClientResponse) -> int | None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    status: int | None = None
    async for line in lines(resp):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            write(out, line + b"\n")
            continue
        if not isinstance(event, dict):
            write(out, line + b"\n")
            continue
        if "exit_status" in event:
            value = event["exit_status"]
            if not isinstance(value, int) or isinstance(value, bool):
                # null: the command never finished (timeout, lost shell); say why if told.
                why = event.get("error") or event.get("detail") or "no exit status"
                raise CliError(f"the command did not finish: {why}", EXIT_API_ERROR)
            status = value
            continue
        if "error" in event and not any(k in event for k in _OUTPUT_KEYS):
            # The daemon reports a failure mid-stream (timeout, lost shell).
            raise CliError(str(event.get("detail") or event["error"]), EXIT_API_ERROR)
        for key in _OUTPUT_KEYS:
            value = event.get(key)
            if isinstance(value, str):
                to_err = key in _STDERR_KEYS or event.get("stream") == "stderr"
                data = value.encode("utf-8", "surrogateescape")
                # A "line" event carries one line without its newline; others are raw chunks.
                if key == "line" and not data.endswith(b"\n"):
                    data += b"\n"
                write(err if to_err else out, data)
                break
    return status


async def _exec_text(resp: aiohttp.ClientResponse) -> int | None:
    """Output passes at once, except a line that looks like the exit status: it is held until
    the stream shows whether it was the last line (the real status) or output."""
    out = sys.stdout.buffer
    held: bytes | None = None
    async for line in lines(resp):
        if held is not None:
            write(out, held + b"\n")
            held = None
        if _EXIT_LINE_RE.fullmatch(line):
            held = line
        else:
            write(out, line + b"\n")
    match = _EXIT_LINE_RE.fullmatch(held) if held is not None else None
    return int(match.group(1)) if match else None
