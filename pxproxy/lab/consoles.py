"""The lab's node consoles and journals: termproxy + vncwebsocket with a simulated shell, and
`GET /nodes/{node}/journal`. Only root@pam with a password ticket gets a shell, as on PVE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from ..pve.termproxy_frames import (
    AUTH_OK,
    MAX_FRAME,
    FrameError,
    Input,
    Resize,
    parse_auth,
    parse_message,
)
from .access import LabAccess
from .api import PARAMS, USER, LabApi, ok
from .journal import CursorError, Journal, JournalTicker, Profile, api_journal_lines
from .shell import ExecRecord, GuestView, NodeShell
from .state import LabCluster, LabError

log = logging.getLogger(__name__)

VNC_TICKET_TTL_S = 40.0  # PVE: about 40 s, one connection
JOURNAL_HISTORY = 200
JOURNAL_TICK_S = 2.0
FIRST_VNC_PORT = 5900


class LabJournals:
    """A journal per node and per guest, written to over time by one owned ticker."""

    def __init__(self, cluster: LabCluster, *, tick_s: float = JOURNAL_TICK_S) -> None:
        self._cluster = cluster
        self._journals: dict[str, Journal] = {}
        self.ticker = JournalTicker([], interval=tick_s)

    def _get(self, key: str, hostname: str, profile: Profile) -> Journal:
        journal = self._journals.get(key)
        if journal is None:
            journal = Journal(
                hostname,
                seed=key,
                profile=profile,
                history=JOURNAL_HISTORY,
            )
            self._journals[key] = journal
            self.ticker.journals.append(journal)
        return journal

    def node(self, name: str) -> Journal:
        return self._get(f"node:{name}", name, "node")

    def guest(self, vmid: int) -> Journal | None:
        guest = self._cluster.guests.get(vmid)
        return self._get(f"guest:{vmid}", guest.name, "guest") if guest else None

    def start(self) -> None:
        for name in self._cluster.nodes:
            self.node(name)
        for vmid in self._cluster.guests:
            self.guest(vmid)
        self.ticker.start()

    async def stop(self) -> None:
        await self.ticker.stop()


@dataclass
class LabShellHost:
    """What a node shell sees of the lab (shell.ShellHost)."""

    node: str
    cluster: LabCluster
    journals: LabJournals

    def guest(self, vmid: int) -> GuestView | None:
        g = self.cluster.guests.get(vmid)
        if g is None:
            return None
        return GuestView(g.vmid, g.name, g.type, g.serving, g.node)

    def journal(self, scope: str) -> Journal | None:
        if scope == "node":
            return self.journals.node(self.node)
        if scope.startswith("guest:"):
            return self.journals.guest(int(scope[6:]))
        return None


@dataclass(slots=True)
class _VncTicket:
    user: str
    node: str
    port: int
    expires: float


class Consoles:
    """Registers the console and journal endpoints on a LabApi and owns every open session."""

    def __init__(
        self,
        cluster: LabCluster,
        access: LabAccess,
        journals: LabJournals,
        *,
        clock: Callable[[], float] = time.time,
        sleep_scale: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self.access = access
        self.journals = journals
        self.clock = clock
        self.sleep_scale = sleep_scale
        self.record: list[ExecRecord] = []  # every command any lab shell executed
        self.sessions_opened = 0
        self._tickets: dict[str, _VncTicket] = {}
        self._shells: set[NodeShell] = set()
        self._next_port = FIRST_VNC_PORT

    @property
    def open_sessions(self) -> int:
        return len(self._shells)

    def register(self, api: LabApi) -> None:
        api.add_route("POST", "/nodes/{node}/termproxy", self._termproxy)
        api.add_route("GET", "/nodes/{node}/vncwebsocket", self._vncwebsocket)
        api.add_route("GET", "/nodes/{node}/journal", self._journal)

    async def close(self) -> None:
        for shell in list(self._shells):
            await shell.close()

    # ------------------------------------------------------------------ journal

    async def _journal(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        self.access.require(request[USER], f"/nodes/{node}", "Sys.Syslog")
        params = request[PARAMS]
        services = request.query.getall("service", []) or None
        try:
            lines = api_journal_lines(
                self.journals.node(node),
                lastentries=_opt_int(params, "lastentries", 1, 1_000_000),
                startcursor=params.get("startcursor") or None,
                endcursor=params.get("endcursor") or None,
                since=_opt_int(params, "since", 0, 2**40),
                until=_opt_int(params, "until", 0, 2**40),
                service=services,
            )
        except CursorError as exc:
            raise LabError(500, f"journalctl failed: {exc}") from None
        return ok(lines)

    # ------------------------------------------------------------------ termproxy

    async def _termproxy(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        user = request[USER]
        self.access.require(user, f"/nodes/{node}", "Sys.Console")
        self._expire()
        port = self._next_port
        self._next_port = FIRST_VNC_PORT + (self._next_port - FIRST_VNC_PORT + 1) % 100
        ticket = f"PVEVNC:{int(self.clock()):08X}::{secrets.token_urlsafe(32)}"
        self._tickets[ticket] = _VncTicket(user, node, port, self.clock() + VNC_TICKET_TTL_S)
        now = int(self.clock())
        upid = f"UPID:{node}:{port:08X}:{now % 2**32:08X}:{now:08X}:vncshell::{user}:"
        # PVE sends the port as a string.
        return ok({"user": user, "ticket": ticket, "port": str(port), "upid": upid})

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, t in self._tickets.items() if t.expires < now]:
            del self._tickets[key]

    async def _vncwebsocket(self, request: web.Request) -> web.StreamResponse:
        node = request.match_info["node"]
        user = request[USER]
        self.access.require(user, f"/nodes/{node}", "Sys.Console")
        params = request[PARAMS]
        self._expire()
        ticket = str(params.get("vncticket", ""))
        entry = self._tickets.pop(ticket, None)  # one connection per ticket
        port = str(params.get("port", ""))
        if entry is None or entry.node != node or str(entry.port) != port or entry.user != user:
            raise LabError(401, "permission denied - invalid vncticket")
        ws = web.WebSocketResponse(protocols=("binary",), max_msg_size=MAX_FRAME + 64)
        await ws.prepare(request)
        try:
            await self._session(ws, node, entry, ticket)
        finally:
            await ws.close()
        return ws

    async def _session(
        self, ws: web.WebSocketResponse, node: str, entry: _VncTicket, ticket: str
    ) -> None:
        first = await _next_frame(ws)
        if first is None:
            return
        try:
            auth = parse_auth(first)
        except FrameError as exc:
            log.info("lab termproxy: bad auth line: %s", exc)
            return
        if auth.user != entry.user or auth.ticket != ticket:
            log.info("lab termproxy: auth line does not match the ticket")
            return
        # Only the exact user root@pam (a password ticket, not a token) gets a root shell.
        shell = NodeShell(
            LabShellHost(node, self.cluster, self.journals),
            root=entry.user == "root@pam",
            recorder=self.record,
            sleep_scale=self.sleep_scale,
        )
        self._shells.add(shell)
        self.sessions_opened += 1
        await ws.send_bytes(AUTH_OK)
        pump = asyncio.create_task(_pump(shell, ws), name="lab-shell-output")
        try:
            while (frame := await _next_frame(ws)) is not None:
                try:
                    message = parse_message(frame)
                except FrameError as exc:
                    # termproxy drops a connection that breaks the protocol; so does the lab.
                    log.info("lab termproxy: %s", exc)
                    break
                if isinstance(message, Input):
                    shell.feed(message.data)
                elif isinstance(message, Resize):
                    shell.resize(message.cols, message.rows)
                if shell.closed:
                    break
        finally:
            await shell.close()
            self._shells.discard(shell)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def _next_frame(ws: web.WebSocketResponse) -> bytes | str | None:
    """The next data frame, or None when the client went away or closed."""
    msg = await ws.receive()
    if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
        data: bytes | str = msg.data
        return data
    return None


async def _pump(shell: NodeShell, ws: web.WebSocketResponse) -> None:
    """Shell output to the client; when the shell exits, the connection closes."""
    with contextlib.suppress(ConnectionError):
        async for chunk in shell:
            await ws.send_bytes(chunk)
    await ws.close()


def _opt_int(params: dict[str, object], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise LabError(
            400,
            "Parameter verification failed.",
            {name: f"value must be an integer between {low} and {high}"},
        )
    return int(text)
