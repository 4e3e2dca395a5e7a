"""Simulated systemd journals for the lab's nodes and guests.

A `Journal` is an append-only, bounded list of entries with journald-like cursors. Lines are
generated deterministically from a seed (so tests and demos are reproducible), followers wait on
an event that every append sets (no polling), and `api_journal_lines` answers
`GET /nodes/{node}/journal` the way PVE's mini-journalreader does: the first and the last line are
cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CursorError",
    "Journal",
    "JournalEntry",
    "JournalTicker",
    "api_journal_lines",
    "format_json",
    "format_line",
    "unit_matches",
]

Profile = Literal["node", "guest"]

# journald priorities: 3 err, 4 warning, 5 notice, 6 info.
PRIO_ERR, PRIO_WARNING, PRIO_NOTICE, PRIO_INFO = 3, 4, 5, 6

_CURSOR_RE = re.compile(r"^s=([0-9a-f]{32});i=([0-9a-f]+)(?:;.*)?$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class CursorError(ValueError):
    """A cursor that is malformed or belongs to another journal."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq: int
    cursor: str
    realtime: float  # epoch seconds
    hostname: str
    ident: str  # SYSLOG_IDENTIFIER, e.g. "pveproxy"
    unit: str | None  # _SYSTEMD_UNIT, e.g. "pveproxy.service" (None for the kernel)
    pid: int | None
    priority: int
    message: str


def unit_matches(entry: JournalEntry, services: Collection[str]) -> bool:
    """True when the entry belongs to one of `services` (unit with or without ".service")."""
    for svc in services:
        name = svc.removesuffix(".service")
        if entry.unit is not None and entry.unit.removesuffix(".service") == name:
            return True
        if entry.ident == name:
            return True
    return False


def format_line(entry: JournalEntry) -> str:
    """journalctl `-o short`: `Nov 23 01:02:03 pve1 pveproxy[1234]: message` (UTC)."""
    t = time.gmtime(entry.realtime)
    stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    who = entry.ident if entry.pid is None else f"{entry.ident}[{entry.pid}]"
    return f"{stamp} {entry.hostname} {who}: {entry.message}"


def format_json(entry: JournalEntry) -> str:
    """journalctl `-o json`: one object per line with journald's field names (all strings)."""
    fields: dict[str, str] = {
        "__CURSOR": entry.cursor,
        "__REALTIME_TIMESTAMP": str(int(entry.realtime * 1_000_000)),
        "_HOSTNAME": entry.hostname,
        "SYSLOG_IDENTIFIER": entry.ident,
        "PRIORITY": str(entry.priority),
        "MESSAGE": entry.message,
    }
    if entry.unit is not None:
        fields["_SYSTEMD_UNIT"] = entry.unit
    if entry.pid is not None:
        fields["_PID"] = str(entry.pid)
    return json.dumps(fields, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class _Source:
    ident: str
    unit: str | None
    pid: int | None
    make: Callable[[random.Random, str], tuple[int, str]]


def _ip(rng: random.Random) -> str:
    return f"192.168.{rng.randint(1, 3)}.{rng.randint(2, 250)}"


def _pveproxy(rng: random.Random, host: str) -> tuple[int, str]:
    return PRIO_INFO, rng.choice(
        [
            "worker 4121 finished",
            "starting 1 worker(s)",
            f"worker {rng.randint(3000, 9000)} started",
            "proxy detected vanished client connection",
        ]
    )


def _pvedaemon(rng: random.Random, host: str) -> tuple[int, str]:
    vmid = rng.choice([100, 101, 102, 103])
    return PRIO_INFO, rng.choice(
        [
            "<root@pam> successful auth for user 'root@pam'",
            f"<root@pam> starting task UPID:{host}:0000{rng.randint(1000, 9999):04X}:"
            f"{rng.randint(0, 0xFFFFFF):08X}:{rng.randint(0x60000000, 0x6FFFFFFF):08X}:"
            f"vncproxy:{vmid}:root@pam:",
            f"<root@pam> end task UPID:{host}:vzstart:{vmid}:root@pam: OK",
        ]
    )


def _pvestatd(rng: random.Random, host: str) -> tuple[int, str]:
    if rng.random() < 0.2:
        return PRIO_WARNING, "status update time (5.123 seconds)"
    return PRIO_INFO, "auth key pair too old, rotating.."


def _sshd(rng: random.Random, host: str) -> tuple[int, str]:
    port = rng.randint(30000, 65000)
    ip = _ip(rng)
    return PRIO_INFO, rng.choice(
        [
            f"Accepted publickey for root from {ip} port {port} ssh2: ED25519 SHA256:q1w2e3",
            f"Connection closed by {ip} port {port} [preauth]",
            "pam_unix(sshd:session): session opened for user root(uid=0) by (uid=0)",
        ]
    )


def _cron(rng: random.Random, host: str) -> tuple[int, str]:
    return PRIO_INFO, rng.choice(
        [
            "(root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
            "pam_unix(cron:session): session closed for user root",
        ]
    )


def _systemd(rng: random.Random, host: str) -> tuple[int, str]:
    return PRIO_INFO, rng.choice(
        [
            "Starting apt-daily.service - Daily apt download activities...",
            "Finished apt-daily.service - Daily apt download activities.",
            "Started session-12.scope - Session 12 of User root.",
            "logrotate.service: Deactivated successfully.",
        ]
    )


def _nginx(rng: random.Random, host: str) -> tuple[int, str]:
    # Access-log shaped, so /var/log/nginx/access.log can be fed from these entries.
    path = rng.choice(["/", "/healthz", "/api/items", "/static/app.js", "/favicon.ico"])
    status = rng.choice([200, 200, 200, 304, 404])
    size = rng.randint(0, 20000)
    agent = rng.choice(["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "Go-http-client/1.1"])
    return PRIO_INFO, f'{_ip(rng)} - - "GET {path} HTTP/1.1" {status} {size} "-" "{agent}"'


def _kernel(rng: random.Random, host: str) -> tuple[int, str]:
    return (
        PRIO_NOTICE,
        f"vmbr0: port {rng.randint(2, 9)}(veth10{rng.randint(0, 9)}i0) entered forwarding state",
    )


def _sources(profile: Profile, rng: random.Random) -> list[_Source]:
    def pid() -> int:
        return rng.randint(200, 40000)

    if profile == "node":
        return [
            _Source("pveproxy", "pveproxy.service", pid(), _pveproxy),
            _Source("pvedaemon", "pvedaemon.service", pid(), _pvedaemon),
            _Source("pvestatd", "pvestatd.service", pid(), _pvestatd),
            _Source("sshd", "ssh.service", pid(), _sshd),
            _Source("CRON", "cron.service", pid(), _cron),
            _Source("systemd", "init.scope", 1, _systemd),
            _Source("kernel", None, None, _kernel),
        ]
    return [
        _Source("nginx", "nginx.service", pid(), _nginx),
        _Source("nginx", "nginx.service", pid(), _nginx),
        _Source("sshd", "ssh.service", pid(), _sshd),
        _Source("CRON", "cron.service", pid(), _cron),
        _Source("systemd", "init.scope", 1, _systemd),
    ]


class Journal:
    """An append-only journal: entries keep a monotonic sequence number and a cursor.

    `max_entries` bounds memory: the oldest entries are dropped, sequence numbers never reused.
    """

    def __init__(
        self,
        hostname: str,
        *,
        seed: int | str = 0,
        profile: Profile = "node",
        history: int = 0,
        history_span: float = 3600.0,
        clock: Callable[[], float] = time.time,
        max_entries: int = 10_000,
    ) -> None:
        self.hostname = hostname
        self._clock = clock
        self._max = max(1, max_entries)
        digest = hashlib.sha256(f"{hostname}/{seed}".encode()).hexdigest()
        self.seqnum_id = digest[:32]  # `s=` of journald: identifies this journal
        self._boot_id = digest[32:64]
        self._rng = random.Random(digest)
        self._sources = _sources(profile, self._rng)
        self._entries: list[JournalEntry] = []
        self._next_seq = 1
        self._changed = asyncio.Event()
        if history > 0:
            now = clock()
            step = history_span / history
            for k in range(history):
                self.generate(realtime=now - history_span + k * step)

    # -- cursors --------------------------------------------------------------------------

    def _cursor(self, seq: int, realtime: float) -> str:
        us = int(realtime * 1_000_000)
        return (
            f"s={self.seqnum_id};i={seq:x};b={self._boot_id};m={seq * 1000:x};t={us:x};x={seq:016x}"
        )

    def parse_cursor(self, cursor: str) -> int:
        """The sequence number in a cursor of this journal; CursorError otherwise."""
        m = _CURSOR_RE.match(cursor)
        if m is None or m.group(1) != self.seqnum_id:
            raise CursorError(f"invalid cursor: {cursor!r}")
        return int(m.group(2), 16)

    @property
    def last_cursor(self) -> str | None:
        return self._entries[-1].cursor if self._entries else None

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def __len__(self) -> int:
        return len(self._entries)

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        ident: str,
        message: str,
        *,
        unit: str | None = None,
        pid: int | None = None,
        priority: int = PRIO_INFO,
        realtime: float | None = None,
    ) -> JournalEntry:
        seq = self._next_seq
        self._next_seq += 1
        rt = self._clock() if realtime is None else realtime
        entry = JournalEntry(
            seq=seq,
            cursor=self._cursor(seq, rt),
            realtime=rt,
            hostname=self.hostname,
            ident=ident,
            unit=unit,
            pid=pid,
            priority=priority,
            message=message,
        )
        self._entries.append(entry)
        if len(self._entries) > self._max:
            # Trim in chunks so appends stay amortised O(1).
            del self._entries[: max(1, self._max // 10)]
        # Wake every waiter, then give later waiters a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()
        return entry

    def generate(self, n: int = 1, *, realtime: float | None = None) -> list[JournalEntry]:
        """Append `n` plausible lines from this journal's services (deterministic per seed)."""
        out = []
        for _ in range(n):
            src = self._rng.choice(self._sources)
            prio, msg = src.make(self._rng, self.hostname)
            out.append(
                self.append(
                    src.ident, msg, unit=src.unit, pid=src.pid, priority=prio, realtime=realtime
                )
            )
        return out

    # -- reading --------------------------------------------------------------------------

    def _index_after(self, seq: int) -> int:
        if not self._entries:
            return 0
        first = self._entries[0].seq
        return min(len(self._entries), max(0, seq - first + 1))

    def entries(
        self,
        limit: int | None = None,
        services: Collection[str] | None = None,
        after_cursor: str | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
    ) -> list[JournalEntry]:
        """Entries oldest first; `limit` keeps the newest N of those matching."""
        start = 0 if after_cursor is None else self._index_after(self.parse_cursor(after_cursor))
        found: Iterable[JournalEntry] = self._entries[start:]
        if services:
            found = (e for e in found if unit_matches(e, services))
        if since is not None:
            found = (e for e in found if e.realtime >= since)
        if until is not None:
            found = (e for e in found if e.realtime <= until)
        result = list(found)
        if limit is not None:
            result = result[-limit:] if limit > 0 else []
        return result

    async def wait_for_new(
        self,
        after_cursor: str | None,
        timeout: float | None,  # noqa: ASYNC109 - a plain deadline is the API shape callers want
        services: Collection[str] | None = None,
    ) -> bool:
        """Wait until an entry newer than `after_cursor` (and matching `services`) exists.

        `after_cursor=None` means "newer than what is there now". Returns False on timeout.
        """
        seq = self.last_seq if after_cursor is None else self.parse_cursor(after_cursor)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            start = self._index_after(seq)
            if any(services is None or unit_matches(e, services) for e in self._entries[start:]):
                return True
            if self._entries:
                seq = max(seq, self._entries[-1].seq)
            event = self._changed
            if deadline is None:
                await event.wait()
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return False

    async def follow(
        self, after_cursor: str | None = None, services: Collection[str] | None = None
    ) -> AsyncIterator[JournalEntry]:
        """Yield entries after `after_cursor` (default: from now on) as they are appended."""
        cursor = after_cursor if after_cursor is not None else self.last_cursor
        seq = self.last_seq if cursor is None else self.parse_cursor(cursor)
        while True:
            fresh = self._entries[self._index_after(seq) :]
            if fresh:
                seq = fresh[-1].seq
                for e in fresh:
                    if not services or unit_matches(e, services):
                        yield e
                continue
            await self._changed.wait()


def api_journal_lines(
    journal: Journal,
    *,
    lastentries: int | None = None,
    startcursor: str | None = None,
    endcursor: str | None = None,
    since: float | None = None,
    until: float | None = None,
    service: Collection[str] | None = None,
) -> list[str]:
    """The `data` of `GET /nodes/{node}/journal`: [start cursor, lines..., end cursor].

    With `startcursor` only entries after it are returned (how the PVE UI follows); when nothing
    is new both cursor lines repeat the position the caller is at, so it can poll again.
    Raises CursorError for a cursor of another journal (PVE answers 500 then).
    """
    found = journal.entries(None, service, after_cursor=startcursor, since=since, until=until)
    if endcursor is not None:
        end_seq = journal.parse_cursor(endcursor)
        found = [e for e in found if e.seq <= end_seq]
    if lastentries is not None or (startcursor is None and since is None):
        found = found[-(lastentries if lastentries is not None else 50) :]
    if found:
        first, last = found[0].cursor, found[-1].cursor
    else:
        here = startcursor or journal.last_cursor or journal._cursor(0, journal._clock())
        first = last = here
    return [first, *(format_line(e) for e in found), last]


class JournalTicker:
    """Appends plausible lines to journals every `interval` seconds, as an owned task."""

    def __init__(self, journals: Journal | Iterable[Journal], interval: float = 2.0) -> None:
        self.journals = [journals] if isinstance(journals, Journal) else list(journals)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def tick(self) -> None:
        """One round by hand (tests): one line per journal."""
        for j in self.journals:
            j.generate()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="journal-ticker")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.tick()
