"""Run ONE command in a Proxmox node shell over termproxy + vncwebsocket.

A node terminal is a pty, not an exec API: it shows a MOTD, prompts, the echo of what was typed
and ANSI noise, and it has no exit status. So the command line we type prints unique markers
around the command's output and the exit status in the end marker. The markers are written so
that the ECHO of the typed line can never match them: the line contains `PXS <token>` (two
words joined by printf's format), the output contains `PXS_<token>`.

Only `root@pam` with a password ticket gets a root shell (PVE gives anyone else a login prompt),
so shells need `username: root@pam` and `password` in the cluster config.

Every path (success, error, timeout, caller cancelled) closes the websocket, which ends the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from ..config.models import ClusterConfig
from .client import PveClient
from .errors import (
    PveConnectionError,
    PveError,
    PveProtocolError,
    PveTimeoutError,
    PveTlsError,
    error_for_status,
)
from .termproxy_frames import (
    AUTH_OK,
    MAX_FRAME,
    encode_auth,
    encode_input,
    encode_keepalive,
    encode_resize,
    split_input,
)
from .tls import ssl_setting

__all__ = [
    "SHELL_TICKET_NEEDED",
    "OutputFilter",
    "ShellBusyError",
    "ShellPool",
    "ShellSessionError",
    "ShellTimeoutError",
    "ShellUnavailableError",
    "Sink",
    "StartHook",
    "TermproxyConnector",
    "marker_command",
]

log = logging.getLogger(__name__)

Sink = Callable[[bytes], Awaitable[None]]
StartHook = Callable[[], Awaitable[None]]

SHELL_TICKET_NEEDED = (
    "a root@pam password ticket is needed for shells (set username: root@pam and password)"
)
SHELL_USER = "root@pam"
KEEPALIVE_S = 30.0  # termproxy's documented keepalive period
TERMINAL_COLS = 200  # wide: fewer wrapped echo lines to skip
TERMINAL_ROWS = 50
CLOSE_TIMEOUT_S = 2.0
MAX_ESCAPE = 256  # an "escape sequence" longer than this is garbage: drop it
CTRL_C = b"\x03"


class ShellUnavailableError(PveError):
    """The cluster has no root@pam password configured, so no shell can be opened."""

    def __init__(self, message: str = SHELL_TICKET_NEEDED) -> None:
        super().__init__(message)


class ShellTimeoutError(PveTimeoutError):
    """The command ran past its timeout; it was interrupted and its shell closed."""


class ShellSessionError(PveProtocolError):
    """The terminal refused us or ended before the command's end marker."""


class ShellBusyError(PveError):
    """Every shell slot of the cluster stayed busy for the whole queue wait."""


# ------------------------------------------------------------------------------------ limiter


class ShellPool:
    """At most `limit` concurrent shells per cluster: a burst of requests queues here (for
    at most `wait_s`) instead of opening hundreds of terminals on a node."""

    def __init__(self, limit: int = 4, *, wait_s: float = 10.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.wait_s = wait_s
        self._sem = asyncio.Semaphore(limit)
        self.in_use = 0
        self.peak = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.wait_s):
                await self._sem.acquire()
        except TimeoutError:
            raise ShellBusyError(
                f"all {self.limit} shells of this cluster stayed busy for {self.wait_s:g}s"
            ) from None
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            self.in_use -= 1
            self._sem.release()


# ------------------------------------------------------------------------------- the output


@dataclass(frozen=True, slots=True)
class Markers:
    token: str

    @classmethod
    def new(cls) -> Markers:
        return cls(secrets.token_hex(12))

    @property
    def start(self) -> bytes:
        return f"PXS_{self.token}".encode()

    @property
    def end(self) -> bytes:
        return f"PXE_{self.token}_".encode()


def marker_command(command: str, markers: Markers) -> str:
    """The line typed into the shell. `command` must already be shell-quoted."""
    # printf joins the words: the typed (echoed) text never contains the joined marker.
    return (
        f"printf '%s_%s\\n' PXS {markers.token}; {command}; "
        f"printf '%s_%s_%d\\n' PXE {markers.token} \"$?\""
    )


_CSI_FINAL = range(0x40, 0x7F)


class _Cleaner:
    """Incremental terminal-noise removal: ANSI escape sequences, CRLF → LF, other C0 controls
    (BEL, SI, backspace...) dropped. Holds back an incomplete escape or a trailing CR."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        buf = self._held + data
        self._held = b""
        out = bytearray()
        i, n = 0, len(buf)
        while i < n:
            b = buf[i]
            if b == 0x1B:
                end = _escape_end(buf, i)
                if end is None:  # incomplete: wait for the rest, unless it is garbage
                    if not final and n - i <= MAX_ESCAPE:
                        self._held = buf[i:]
                    break
                i = end
                continue
            if b == 0x0D:
                if i + 1 >= n:
                    if not final:
                        self._held = b"\r"
                    break
                if buf[i + 1] != 0x0A:
                    out.append(0x0D)  # a lone CR (progress bars): keep it
                i += 1
                continue
            if (b < 0x20 and b not in (0x09, 0x0A)) or b == 0x7F:
                i += 1
                continue
            out.append(b)
            i += 1
        return bytes(out)


def _escape_end(buf: bytes, i: int) -> int | None:
    """Index just past the escape sequence starting at buf[i] (ESC), None if incomplete."""
    if i + 1 >= len(buf):
        return None
    kind = buf[i + 1]
    if kind == 0x5B:  # CSI: ESC [ params/intermediates final
        j = i + 2
        while j < len(buf):
            if buf[j] in _CSI_FINAL:
                return j + 1
            j += 1
        return None
    if kind == 0x5D:  # OSC: ends with BEL or ESC \
        j = i + 2
        while j < len(buf):
            if buf[j] == 0x07:
                return j + 1
            if buf[j] == 0x1B and j + 1 < len(buf) and buf[j + 1] == 0x5C:
                return j + 2
            j += 1
        return None
    if kind in (0x28, 0x29, 0x4F):  # charset designation ESC ( B, SS3 ESC O x: 3 bytes
        return i + 3 if i + 2 < len(buf) else None
    return i + 2


class OutputFilter:
    """Raw pty bytes in; the command's own output (cleaned) out, then its exit status.

    Everything before the start marker's line (MOTD, prompt, echo) is dropped; output is
    released as it arrives except a suffix that might be the start of the end marker.
    """

    def __init__(self, markers: Markers) -> None:
        self._start = markers.start
        self._end = markers.end
        self._buf = b""
        self._started = False
        self._cleaner = _Cleaner()
        self.exit_status: int | None = None

    @property
    def started(self) -> bool:
        return self._started

    def feed(self, data: bytes) -> bytes:
        if self.exit_status is not None:
            return b""
        self._buf += data
        if not self._started:
            at = self._buf.find(self._start)
            if at < 0:
                # Keep only what might still complete the start marker.
                self._buf = self._buf[-len(self._start) :]
                return b""
            newline = self._buf.find(b"\n", at)
            if newline < 0:
                return b""
            self._started = True
            self._buf = self._buf[newline + 1 :]
        at = self._buf.find(self._end)
        if at >= 0:
            m = re.match(rb"(\d{1,3})[\r\n]", self._buf[at + len(self._end) :])
            if m is None:  # the status digits have not all arrived yet
                ready, self._buf = self._buf[:at], self._buf[at:]
                return self._cleaner.feed(ready)
            out = self._cleaner.feed(self._buf[:at], final=True)
            self.exit_status = int(m.group(1))
            self._buf = b""
            return out
        keep = _marker_prefix_len(self._buf, self._end)
        ready, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
        return self._cleaner.feed(ready)


def _marker_prefix_len(buf: bytes, marker: bytes) -> int:
    """Length of the longest suffix of buf that is a proper prefix of marker."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


# ------------------------------------------------------------------------------ the session


class TermproxyConnector:
    """Opens node shells of one cluster: the client's termproxy POST (root@pam ticket), then
    the vncwebsocket with the same cookie and TLS setting. The websockets get a session of
    their own: a shell holds its connection for as long as it runs, which must not eat the
    client's bounded pool of API connections."""

    def __init__(
        self,
        cluster: ClusterConfig,
        client: PveClient,
        *,
        keepalive_s: float = KEEPALIVE_S,
    ) -> None:
        self._cfg = cluster
        self._client = client
        self._keepalive_s = keepalive_s
        self._ssl = ssl_setting(cluster.tls)
        self._session: aiohttp.ClientSession | None = None
        self.sessions_opened = 0

    @property
    def available(self) -> bool:
        return self._cfg.username == SHELL_USER and self._cfg.password is not None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(
        self,
        node: str,
        command: str,
        sink: Sink,
        *,
        timeout_s: float | None,
        on_start: StartHook | None = None,
    ) -> int:
        """Run `command` (already shell-quoted) in a node shell, stream its output to `sink`,
        return its exit status. Raises ShellTimeoutError after `timeout_s` (None: no limit).
        `on_start` is awaited once the command has started (its start marker was seen)."""
        if not self.available:
            raise ShellUnavailableError()
        opened = await self._client.termproxy(node)
        url = self._client.websocket_url(node, opened.port, opened.ticket)
        try:
            ws = await self._http().ws_connect(
                url,
                headers={"Cookie": f"PVEAuthCookie={opened.cookie}"},
                protocols=("binary",),
                max_msg_size=MAX_FRAME + 1024,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
                autoping=True,
            )
        except aiohttp.WSServerHandshakeError as exc:
            # The URL carries the vncticket: name the endpoint, not the URL.
            where = f"nodes/{node}/vncwebsocket"
            raise error_for_status(exc.status, exc.message or "websocket refused", where) from None
        except aiohttp.ServerFingerprintMismatch:
            raise PveTlsError("certificate fingerprint mismatch", path="vncwebsocket") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Not str(exc): aiohttp puts the URL in it, and the URL carries the vncticket.
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else None
            raise PveConnectionError(
                f"cannot open the terminal websocket on node {node}: {reason or type(exc).__name__}"
            ) from None
        self.sessions_opened += 1
        keepalive: asyncio.Task[None] | None = None
        try:
            markers = Markers.new()
            filt = OutputFilter(markers)
            await ws.send_bytes(encode_auth(opened.user, opened.ticket))
            try:
                async with asyncio.timeout(timeout_s):
                    rest = await self._expect_ok(ws)
                    await ws.send_bytes(encode_resize(TERMINAL_COLS, TERMINAL_ROWS))
                    line = marker_command(command, markers) + "\r"
                    for frame in split_input(line.encode()):
                        await ws.send_bytes(frame)
                    keepalive = asyncio.create_task(self._keepalive(ws), name="termproxy-keepalive")
                    return await self._pump(ws, filt, rest, sink, on_start)
            except asyncio.CancelledError:
                # The caller gave up (client gone, daemon stopping): interrupt, then hang up.
                await _interrupt(ws)
                raise
            except TimeoutError:
                await _interrupt(ws)
                raise ShellTimeoutError(
                    f"the command did not finish within {timeout_s:g}s; it was interrupted",
                    path=f"nodes/{node}/vncwebsocket",
                ) from None
        finally:
            if keepalive is not None:
                keepalive.cancel()
                # A keepalive that failed (the terminal went away) must not mask the result.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await keepalive
            await _close_ws(ws)

    @staticmethod
    async def _expect_ok(ws: aiohttp.ClientWebSocketResponse) -> bytes:
        """termproxy answers a good auth line with `OK` (output may follow in the same frame)."""
        msg = await ws.receive()
        data = _frame_bytes(msg)
        if data is None or not data.startswith(AUTH_OK):
            raise ShellSessionError("the terminal refused the auth line", path="vncwebsocket")
        return data[len(AUTH_OK) :]

    async def _keepalive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            await asyncio.sleep(self._keepalive_s)
            await ws.send_bytes(encode_keepalive())

    @staticmethod
    async def _pump(
        ws: aiohttp.ClientWebSocketResponse,
        filt: OutputFilter,
        first: bytes,
        sink: Sink,
        on_start: StartHook | None,
    ) -> int:
        data: bytes | None = first
        while True:
            if data:
                out = filt.feed(data)
                if on_start is not None and filt.started:
                    await on_start()
                    on_start = None
                if out:
                    await sink(out)
                if filt.exit_status is not None:
                    return filt.exit_status
            data = _frame_bytes(await ws.receive())
            if data is None:
                raise ShellSessionError(
                    "the terminal closed before the command finished", path="vncwebsocket"
                )


def _frame_bytes(msg: aiohttp.WSMessage) -> bytes | None:
    if msg.type == aiohttp.WSMsgType.BINARY:
        return bytes(msg.data)
    if msg.type == aiohttp.WSMsgType.TEXT:
        return str(msg.data).encode()
    return None  # close, error: the session is over


async def _interrupt(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Ctrl-C to the command, best effort and bounded: the close that follows ends the shell
    in any case."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await ws.send_bytes(encode_input(CTRL_C))


async def _close_ws(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Closing the socket ends the shell (and whatever runs in it). Never skipped."""
    try:
        await ws.close()
    except Exception as exc:  # a broken connection is closed all the same
        log.debug("closing the terminal websocket: %s", exc)
