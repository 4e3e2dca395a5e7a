"""A simulated login shell for the lab's node terminals (termproxy).

It behaves like bash on a PTY closely enough that pxproxy's exec client has to be robust: a MOTD,
a coloured prompt wrapped in bracketed-paste mode switches, readline-style echo (with wrapping at
the terminal width), CRLF line endings, typeahead echoed by the tty while a command runs, and
continuation prompts for unterminated quotes. It parses command lines like a POSIX shell (quotes,
escapes, `;`, `&&`, `||`, `|`, redirections, `$?`, `$(...)`) and runs a small set of simulated
commands, including `pct exec <vmid> -- argv...` into guests.

NOTHING here touches the host: every command is Python code over the lab's in-memory state.
Every simple command that runs (after expansion) is recorded with its argv, so tests can prove
that a hostile argument stayed a literal argument.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .journal import CursorError, Journal, JournalEntry, format_json, format_line

__all__ = [
    "ExecRecord",
    "FileSource",
    "GuestView",
    "JournalFile",
    "NodeShell",
    "ShellHost",
    "ShellSyntaxError",
    "SimpleShellHost",
    "StaticFile",
    "standard_files",
]

KERNEL = "6.14.8-2-pve"
KERNEL_BUILD = "#1 SMP PREEMPT_DYNAMIC PMX 6.14.8-2 (2025-07-22T10:04Z)"
PASTE_ON = "\x1b[?2004h"
PASTE_OFF = "\x1b[?2004l"


# -- what the lab provides ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuestView:
    """What the shell needs to know about a guest."""

    vmid: int
    name: str
    type: Literal["lxc", "qemu"]
    running: bool
    node: str


@dataclass(frozen=True, slots=True)
class StaticFile:
    content: str


@dataclass(frozen=True, slots=True)
class JournalFile:
    """A log file whose lines are journal entries (so `tail -f` follows the journal)."""

    journal: Journal
    services: frozenset[str] | None = None
    render: Callable[[JournalEntry], str] = format_line


FileSource = StaticFile | JournalFile


class ShellHost(Protocol):
    """The lab side of a node shell. Keep it small: three members.

    - `node`: the node this shell runs on (prompt, hostname, `pct` scope).
    - `guest(vmid)`: the guest with that vmid anywhere in the cluster, or None.
    - `journal(scope)`: the journal of "node" or "guest:<vmid>", or None when it has none.

    Files (`cat`, `tail`) are derived from the journal by `standard_files` unless the host also
    has a `files(scope) -> Mapping[str, FileSource]` method, which then wins.
    """

    @property
    def node(self) -> str: ...

    def guest(self, vmid: int) -> GuestView | None: ...

    def journal(self, scope: str) -> Journal | None: ...


@dataclass
class SimpleShellHost:
    """A ready-made ShellHost over plain dicts (tests; the lab may use it too)."""

    node: str
    guests: dict[int, GuestView] = field(default_factory=dict)
    journals: dict[str, Journal] = field(default_factory=dict)

    def guest(self, vmid: int) -> GuestView | None:
        return self.guests.get(vmid)

    def journal(self, scope: str) -> Journal | None:
        return self.journals.get(scope)


def _access_line(entry: JournalEntry) -> str:
    # nginx entries carry an access-log line without the timestamp: put it where nginx does.
    t = time.gmtime(entry.realtime)
    stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", t)
    ip, _, rest = entry.message.partition(" - - ")
    return f"{ip} - - {stamp} {rest}"


def standard_files(hostname: str, journal: Journal | None, *, guest: bool) -> dict[str, FileSource]:
    """The files a node or a Debian guest has, fed from its journal."""
    files: dict[str, FileSource] = {
        "/etc/hostname": StaticFile(hostname + "\n"),
        "/etc/os-release": StaticFile(
            'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\n'
            'VERSION_ID="13"\nVERSION="13 (trixie)"\nID=debian\n'
        ),
        "/etc/debian_version": StaticFile("13.1\n"),
    }
    if journal is not None:
        files["/var/log/syslog"] = JournalFile(journal)
        files["/var/log/messages"] = JournalFile(journal)
        files["/var/log/auth.log"] = JournalFile(journal, frozenset({"sshd", "CRON"}))
        if guest:
            files["/var/log/nginx/access.log"] = JournalFile(
                journal, frozenset({"nginx"}), _access_line
            )
            files["/var/log/nginx/error.log"] = StaticFile("")
        else:
            files["/var/log/pveproxy/access.log"] = JournalFile(journal, frozenset({"pveproxy"}))
    return files


@dataclass(frozen=True, slots=True)
class ExecRecord:
    """One simple command that ran: where, its argv after expansion, and the typed line."""

    node: str
    scope: str  # "node" or "guest:<vmid>"
    argv: tuple[str, ...]
    line: str


# -- parsing ------------------------------------------------------------------------------------


class ShellSyntaxError(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(f"syntax error near unexpected token `{token}'")
        self.token = token


class _Incomplete(Exception):
    """The line needs more input (open quote, trailing `&&`, backslash-newline)."""


@dataclass(frozen=True, slots=True)
class _Lit:
    text: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    quoted: bool


@dataclass(frozen=True, slots=True)
class _Subst:
    script: str
    quoted: bool


_Part = _Lit | _Param | _Subst
_Word = tuple[_Part, ...]


@dataclass(frozen=True, slots=True)
class _Op:
    op: str


@dataclass(frozen=True, slots=True)
class _Redirect:
    fd: int
    op: str  # ">", ">>", "<", ">&"
    target: _Word


@dataclass(frozen=True, slots=True)
class _Command:
    words: tuple[_Word, ...]
    redirects: tuple[_Redirect, ...]


@dataclass(frozen=True, slots=True)
class _Pipeline:
    commands: tuple[_Command, ...]
    negate: bool


@dataclass(frozen=True, slots=True)
class _AndOr:
    first: _Pipeline
    rest: tuple[tuple[str, _Pipeline], ...]


_OPERATORS = ("&&", "||", ";;", ">>", ">&", ";", "&", "|", ">", "<", "(", ")", "\n")
_SPECIAL_PARAMS = "?$#@*!-0123456789"


def _find_subst_end(s: str, i: int) -> int:
    """Index of the `)` closing a `$(` whose content starts at i (quotes respected)."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise _Incomplete
            i = j + 1
            continue
        if c == '"':
            i += 1
            while i < len(s) and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            if i >= len(s):
                raise _Incomplete
            i += 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise _Incomplete


def _tokenize(s: str) -> list[_Word | _Op | _Redirect]:
    tokens: list[_Word | _Op | _Redirect] = []
    parts: list[_Part] = []
    buf: list[str] = []
    in_word = False
    pending_redirect: tuple[int, str] | None = None

    def flush_lit(quoted: bool = False) -> None:
        if buf:
            parts.append(_Lit("".join(buf), quoted))
            buf.clear()

    def end_word() -> None:
        nonlocal in_word, pending_redirect
        flush_lit()
        if in_word:
            word = tuple(parts)
            if pending_redirect is not None:
                fd, op = pending_redirect
                tokens.append(_Redirect(fd, op, word))
                pending_redirect = None
            else:
                tokens.append(word)
        parts.clear()
        in_word = False

    def dollar(i: int, quoted: bool) -> int:
        """Parse a `$` expansion at s[i] == '$'; returns the next index."""
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if nxt == "(":
            end = _find_subst_end(s, i + 2)
            parts.append(_Subst(s[i + 2 : end], quoted))
            return end + 1
        if nxt == "{":
            end = s.find("}", i + 2)
            if end < 0:
                raise _Incomplete
            parts.append(_Param(s[i + 2 : end], quoted))
            return end + 1
        if nxt and nxt in _SPECIAL_PARAMS:
            parts.append(_Param(nxt, quoted))
            return i + 2
        if nxt and (nxt.isalpha() or nxt == "_"):
            j = i + 1
            while j < len(s) and (s[j].isalnum() or s[j] == "_"):
                j += 1
            parts.append(_Param(s[i + 1 : j], quoted))
            return j
        buf.append("$")
        return i + 1

    i = 0
    while i < len(s):
        c = s[i]
        if c in " \t":
            end_word()
            i += 1
            continue
        if c == "#" and not in_word:
            while i < len(s) and s[i] != "\n":
                i += 1
            continue
        if c == "\\":
            if i + 1 >= len(s):
                raise _Incomplete
            if s[i + 1] == "\n":  # line continuation
                i += 2
                continue
            flush_lit()
            parts.append(_Lit(s[i + 1], True))
            in_word = True
            i += 2
            continue
        if c == "'":
            end = s.find("'", i + 1)
            if end < 0:
                raise _Incomplete
            flush_lit()
            parts.append(_Lit(s[i + 1 : end], True))
            in_word = True
            i = end + 1
            continue
        if c == '"':
            flush_lit()
            in_word = True
            i += 1
            while True:
                if i >= len(s):
                    raise _Incomplete
                d = s[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < len(s) and s[i + 1] in '$`"\\\n':
                    if s[i + 1] != "\n":
                        buf.append(s[i + 1])
                    i += 2
                    continue
                if d == "$":
                    flush_lit(True)
                    i = dollar(i, True)
                    continue
                if d == "`":
                    end = s.find("`", i + 1)
                    if end < 0:
                        raise _Incomplete
                    flush_lit(True)
                    parts.append(_Subst(s[i + 1 : end], True))
                    i = end + 1
                    continue
                buf.append(d)
                i += 1
            flush_lit(True)
            if not parts:
                parts.append(_Lit("", True))
            continue
        if c == "$":
            flush_lit()
            in_word = True
            i = dollar(i, False)
            continue
        if c == "`":
            end = s.find("`", i + 1)
            if end < 0:
                raise _Incomplete
            flush_lit()
            parts.append(_Subst(s[i + 1 : end], False))
            in_word = True
            i = end + 1
            continue
        op = next((o for o in _OPERATORS if s.startswith(o, i)), None)
        if op is not None:
            fd = 1 if op != "<" else 0
            # `2>file`: a word that is only digits directly before a redirection is its fd.
            if op in (">", ">>", ">&", "<") and in_word and len(parts) == 0 and buf:
                text = "".join(buf)
                if text.isdigit():
                    fd = int(text)
                    buf.clear()
                    in_word = False
            end_word()
            i += len(op)
            if op in (">", ">>", ">&", "<"):
                if pending_redirect is not None:
                    raise ShellSyntaxError(op)
                pending_redirect = (fd, op)
                continue
            if pending_redirect is not None:
                raise ShellSyntaxError("newline" if op == "\n" else op)
            tokens.append(_Op(op))
            continue
        buf.append(c)
        in_word = True
        i += 1
    end_word()
    if pending_redirect is not None:
        raise ShellSyntaxError("newline")
    return tokens


def parse(s: str) -> list[_AndOr]:
    """Parse a command line into and-or lists. Raises _Incomplete or ShellSyntaxError."""
    tokens = _tokenize(s)
    pos = 0
    result: list[_AndOr] = []

    def peek() -> _Word | _Op | _Redirect | None:
        return tokens[pos] if pos < len(tokens) else None

    def command() -> _Command:
        nonlocal pos
        words: list[_Word] = []
        redirects: list[_Redirect] = []
        while (t := peek()) is not None and not isinstance(t, _Op):
            if isinstance(t, _Redirect):
                redirects.append(t)
            else:
                words.append(t)
            pos += 1
        if not words and not redirects:
            t = peek()
            if t is None:
                raise _Incomplete
            assert isinstance(t, _Op)
            raise ShellSyntaxError("newline" if t.op == "\n" else t.op)
        return _Command(tuple(words), tuple(redirects))

    def skip_newlines() -> None:
        nonlocal pos
        while isinstance(t := peek(), _Op) and t.op == "\n":
            pos += 1

    def pipeline() -> _Pipeline:
        nonlocal pos
        negate = False
        t = peek()
        if isinstance(t, tuple) and t == (_Lit("!", False),):
            negate = True
            pos += 1
        cmds = [command()]
        while isinstance(t := peek(), _Op) and t.op == "|":
            pos += 1
            skip_newlines()
            cmds.append(command())
        return _Pipeline(tuple(cmds), negate)

    while True:
        skip_newlines()
        if peek() is None:
            break
        t = peek()
        if isinstance(t, _Op) and t.op != "\n":
            raise ShellSyntaxError(t.op)
        first = pipeline()
        rest: list[tuple[str, _Pipeline]] = []
        while isinstance(t := peek(), _Op) and t.op in ("&&", "||"):
            pos += 1
            skip_newlines()
            rest.append((t.op, pipeline()))
        result.append(_AndOr(first, tuple(rest)))
        t = peek()
        if t is None:
            break
        assert isinstance(t, _Op)
        if t.op in (";", "&", "\n"):
            pos += 1
            continue
        raise ShellSyntaxError(t.op)
    return result


# -- running ------------------------------------------------------------------------------------


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class _Ctx:
    """Where a command runs and where its output goes."""

    scope: str
    out: Callable[[str], None]
    err: Callable[[str], None]
    stdin: str | None
    params: list[str]  # $0, $1, ...
    line: str


_Builtin = Callable[["NodeShell", _Ctx, list[str]], Awaitable[int]]


def _char_width(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def _parse_count(text: str) -> int | None:
    t = text.lstrip("+")
    return int(t) if t.isdigit() else None


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "a": "\a", "b": "\b", "e": "\x1b",
            "f": "\f", "v": "\v"}  # fmt: skip


def _backslash_escapes(s: str) -> tuple[str, bool]:
    """echo -e / printf escapes. Returns (text, stop) where `\\c` asks to stop output."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n == "c":
            return "".join(out), True
        elif n == "0" or n in "1234567":
            j = i + 1 + (n == "0")
            digits = ""
            while j < len(s) and len(digits) < 3 and s[j] in "01234567":
                digits += s[j]
                j += 1
            out.append(chr(int(digits or "0", 8) & 0xFF))
            i = j
        elif n == "x":
            j = i + 2
            digits = ""
            while j < len(s) and len(digits) < 2 and s[j] in "0123456789abcdefABCDEF":
                digits += s[j]
                j += 1
            out.append(chr(int(digits, 16)) if digits else "\\x")
            i = j
        else:
            out.append("\\" + n)
            i += 2
    return "".join(out), False


def _printf(fmt: str, args: list[str]) -> tuple[str, str | None]:
    """printf(1): returns (output, error message or None). The format repeats for extra args."""
    out: list[str] = []
    err: str | None = None
    args = list(args)
    while True:
        consumed = False
        i = 0
        while i < len(fmt):
            c = fmt[i]
            if c == "\\":
                text, stop = _backslash_escapes(
                    fmt[i : i + 4] if fmt[i + 1 : i + 2] in "0x" else fmt[i : i + 2]
                )
                # Re-scan precisely: escapes have variable length.
                text, stop, used = _one_escape(fmt, i)
                out.append(text)
                if stop:
                    return "".join(out), err
                i += used
                continue
            if c != "%":
                out.append(c)
                i += 1
                continue
            j = i + 1
            while j < len(fmt) and fmt[j] in "-+ #0123456789.":
                j += 1
            if j >= len(fmt):
                out.append(fmt[i:])
                break
            conv = fmt[j]
            spec = fmt[i + 1 : j]
            i = j + 1
            if conv == "%":
                out.append("%")
                continue
            arg = args.pop(0) if args else None
            consumed = consumed or arg is not None
            if conv == "s":
                out.append(("%" + spec + "s") % (arg or ""))
            elif conv == "b":
                text, stop = _backslash_escapes(arg or "")
                out.append(("%" + spec + "s") % text)
                if stop:
                    return "".join(out), err
            elif conv in "dixXou":
                try:
                    num = (
                        int(arg or "0", 0)
                        if arg and arg[:1] not in "'\""
                        else (ord(arg[1]) if arg and len(arg) > 1 else 0)
                    )
                except ValueError:
                    err = f"printf: {arg}: invalid number"
                    num = 0
                out.append(("%" + spec + ("d" if conv in "iu" else conv)) % num)
            elif conv in "feEgG":
                try:
                    fnum = float(arg or "0")
                except ValueError:
                    err = f"printf: {arg}: invalid number"
                    fnum = 0.0
                out.append(("%" + spec + conv) % fnum)
            elif conv == "c":
                out.append((arg or "")[:1])
            elif conv == "q":
                out.append(_shell_quote(arg or ""))
            else:
                err = f"printf: %{conv}: invalid directive"
                break
        if not args or not consumed:
            break
    return "".join(out), err


def _one_escape(s: str, i: int) -> tuple[str, bool, int]:
    """Decode the single backslash escape at s[i]; returns (text, stop, length)."""
    if i + 1 >= len(s):
        return "\\", False, 1
    n = s[i + 1]
    if n in _ESCAPES:
        return _ESCAPES[n], False, 2
    if n == "c":
        return "", True, 2
    if n in "01234567":
        j = i + 1
        digits = ""
        while j < len(s) and len(digits) < 3 and s[j] in "01234567":
            digits += s[j]
            j += 1
        return chr(int(digits, 8) & 0xFF), False, j - i
    if n == "x":
        j = i + 2
        digits = ""
        while j < len(s) and len(digits) < 2 and s[j] in "0123456789abcdefABCDEF":
            digits += s[j]
            j += 1
        if not digits:
            return "\\x", False, 2
        return chr(int(digits, 16)), False, j - i
    if n == '"':
        return '"', False, 2
    return "\\" + n, False, 2


def _shell_quote(s: str) -> str:
    if s and all(c.isalnum() or c in "@%+=:,./-_" for c in s):
        return s
    return "'" + s.replace("'", "'\\''") + "'"


class NodeShell:
    """One terminal session on a lab node.

    Feed it the bytes a termproxy client typed (`feed`), read what the pty would show (`read`,
    or `async for chunk in shell`). `root=False` models any user but root@pam: a `/bin/login`
    prompt that never lets anyone in.
    """

    def __init__(
        self,
        host: ShellHost,
        *,
        root: bool,
        recorder: list[ExecRecord] | None = None,
        cols: int = 80,
        rows: int = 20,
        sleep_scale: float = 1.0,
        last_login: str = "from 192.168.1.10",
    ) -> None:
        self.host = host
        self.root = root
        self.cols = cols
        self.rows = rows
        self.sleep_scale = sleep_scale
        self.history: list[ExecRecord] = []  # commands this shell ran
        self.lines: list[str] = []  # complete lines it was asked to execute
        self._recorder = recorder
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self._eof_sent = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._esc: str | None = None  # an escape sequence being collected
        self._pasting = False
        self._line: list[str] = []
        self._pending = ""  # earlier lines of a command needing continuation
        self._col = 0  # cursor column as the terminal sees it
        self._task: asyncio.Task[None] | None = None
        self._typeahead: list[str] = []
        self._status = 0
        self._vars: dict[str, str] = {
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "SHELL": "/bin/bash",
            "PWD": "/root",
            "HOSTNAME": host.node,
            "TERM": "xterm-256color",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        self._pid = 1000 + (abs(hash(host.node)) % 50000)
        self._login_stage: Literal["user", "password"] = "user"
        self._files: dict[str, dict[str, str]] = {}  # files written by redirections, per scope
        if root:
            t = time.gmtime()
            self._write(
                f"Linux {host.node} {KERNEL} {KERNEL_BUILD} x86_64\n\n"
                "The programs included with the Debian GNU/Linux system are free software;\n"
                "the exact distribution terms for each program are described in the\n"
                "individual files in /usr/share/doc/*/copyright.\n\n"
                "Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY, to the extent\n"
                "permitted by applicable law.\n"
                f"Last login: {time.strftime('%a %b %d %H:%M:%S %Y', t)} {last_login}\n"
            )
        self._prompt()

    # -- the transport side ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """True while a command line is running."""
        return self._task is not None and not self._task.done()

    @property
    def last_status(self) -> int:
        return self._status

    def resize(self, cols: int, rows: int) -> None:
        if cols > 0 and rows > 0:
            self.cols, self.rows = cols, rows

    def feed(self, data: bytes) -> None:
        """Bytes typed by the client; may split UTF-8 characters and escape sequences anywhere."""
        if self._closed:
            return
        for c in self._decoder.decode(data):
            if self._closed:
                return
            self._char(c)

    async def read(self) -> bytes:
        """The next chunk of terminal output; b"" once the shell is closed and drained."""
        if self._eof_sent and self._out.empty():
            return b""
        chunk = await self._out.get()
        if not chunk:
            self._eof_sent = True
        return chunk

    def read_nowait(self) -> bytes:
        """Everything queued so far, without waiting."""
        chunks = []
        while not self._out.empty():
            c = self._out.get_nowait()
            if not c:
                self._eof_sent = True
                break
            chunks.append(c)
        return b"".join(chunks)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await self.read():
            yield chunk

    async def close(self) -> None:
        """The websocket went away: stop whatever runs, end the output."""
        task = self._task
        self._finish()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.put_nowait(b"")

    # -- output ---------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        """Output as the pty shows it: LF becomes CRLF (ONLCR)."""
        if self._closed or not text:
            return
        self._out.put_nowait(text.replace("\r\n", "\n").replace("\n", "\r\n").encode())
        # Track the column for echo wrapping; only the text after the last line break counts.
        tail = text.rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
        if "\n" in text or "\r" in text:
            self._col = 0
        self._col += sum(_char_width(c) for c in _strip_ansi(tail))

    def _raw(self, text: str) -> None:
        if not self._closed:
            self._out.put_nowait(text.encode())

    def _prompt(self, continuation: bool = False) -> None:
        self._col = 0
        if not self.root:
            self._write(
                f"{self.host.node} login: " if self._login_stage == "user" else "Password: "
            )
            return
        if continuation:
            self._raw(PASTE_ON)
            self._write("> ")
            return
        self._raw(PASTE_ON)
        self._raw(f"\x1b[01;32mroot@{self.host.node}\x1b[00m:\x1b[01;34m~\x1b[00m# ")
        self._col = len(f"root@{self.host.node}:~# ")

    # -- input ----------------------------------------------------------------------------------

    def _char(self, c: str) -> None:
        if self._esc is not None:
            self._esc += c
            if not _escape_complete(self._esc):
                return
            seq, self._esc = self._esc, None
            if seq == "\x1b[200~":
                self._pasting = True
            elif seq == "\x1b[201~":
                self._pasting = False
            # Other sequences (arrows, function keys) are swallowed: no line editing here.
            return
        if c == "\x1b":
            self._esc = c
            return
        if self.busy:
            self._typeahead_char(c)
            return
        if self._pasting:
            if c in "\r\n":
                self._insert("\n")
            elif c >= " " or c == "\t":
                self._insert(c)
            return
        self._edit(c)

    def _typeahead_char(self, c: str) -> None:
        # The command owns the tty (cooked mode): the tty echoes, ^C interrupts, the rest waits
        # for the shell to read it after the command.
        if c == "\x03":
            self._raw("^C")
            if self._task is not None:
                self._task.cancel()
            self._typeahead.clear()
            return
        if c == "\r":
            c = "\n"
        self._typeahead.append(c)
        if c == "\n":
            self._write("\n")
        elif c >= " ":
            self._raw(c)

    def _edit(self, c: str) -> None:
        if not self.root:
            self._login_char(c)
            return
        if c in "\r\n":
            self._enter()
        elif c in "\x7f\b":
            self._backspace()
        elif c == "\x03":
            self._write("^C\n")
            self._raw(PASTE_OFF + "\r")
            self._line.clear()
            self._pending = ""
            self._status = 130
            self._prompt()
        elif c == "\x04":
            if not self._line and not self._pending:
                self._write("\n")
                self._raw(PASTE_OFF + "\r")
                self._write("logout\n")
                self._finish()
        elif c == "\x15":
            while self._line:
                self._backspace()
        elif c == "\t":
            self._raw("\a")  # no completion: readline rings the bell
        elif c >= " ":
            self._insert(c)

    def _insert(self, c: str) -> None:
        self._line.append(c)
        if c == "\n":  # a pasted newline shows as a line break
            self._write("\n")
            return
        self._raw(c)
        self._col += _char_width(c)
        if self._col >= self.cols:
            # readline at the right margin: a space then CR makes the terminal wrap for sure.
            self._raw(" \r")
            self._col = 0

    def _backspace(self) -> None:
        if not self._line:
            self._raw("\a")
            return
        c = self._line.pop()
        w = _char_width(c)
        if c == "\n" or w == 0:
            return
        if self._col == 0:
            self._raw(f"\x1b[A\x1b[{self.cols}G" + " " * w + f"\x1b[{self.cols - w + 1}G")
            self._col = self.cols - w
        else:
            self._raw("\b" * w + " " * w + "\b" * w)
            self._col -= w

    def _login_char(self, c: str) -> None:
        if c in "\r\n":
            self._write("\n")
            if self._login_stage == "user":
                self._login_stage = "password"
            else:
                self._login_stage = "user"
                self._write("\nLogin incorrect\n")
            self._line.clear()
            self._prompt()
        elif c in "\x7f\b":
            if self._line:
                self._line.pop()
                if self._login_stage == "user":
                    self._raw("\b \b")
        elif c >= " ":
            self._line.append(c)
            if self._login_stage == "user":  # passwords are not echoed
                self._raw(c)

    def _enter(self) -> None:
        self._write("\n")
        self._raw(PASTE_OFF + "\r")
        text = self._pending + "".join(self._line)
        self._line.clear()
        try:
            program = parse(text)
        except _Incomplete:
            self._pending = text + "\n"
            self._prompt(continuation=True)
            return
        except ShellSyntaxError as exc:
            self._pending = ""
            self.lines.append(text)
            self._write(f"-bash: {exc}\n")
            self._status = 2
            self._prompt()
            return
        self._pending = ""
        if not program:
            self._prompt()
            return
        self.lines.append(text)
        self._task = asyncio.get_running_loop().create_task(self._run_line(text, program))
        self._task.add_done_callback(self._task_done)

    async def _run_line(self, text: str, program: list[_AndOr]) -> None:
        ctx = _Ctx("node", self._write, self._write, None, ["-bash"], text)
        try:
            self._status = await self._run_program(program, ctx)
        except asyncio.CancelledError:
            if self._closed:
                raise
            self._interrupted()
        except _Exit as exc:
            self._status = exc.status
            self._write("logout\n")
            self._finish()
            return
        self._line_done()

    def _interrupted(self) -> None:
        # ^C: the tty already echoed "^C"; bash ends the line, $? is 128+SIGINT.
        self._write("\n")
        self._status = 130

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # A ^C that arrives before the line's task ever ran cancels it without running any of
        # its code: finish the line here instead.
        if task.cancelled() and not self._closed:
            self._interrupted()
            self._line_done()

    def _line_done(self) -> None:
        if self._closed:
            return
        self._task = None
        self._prompt()
        typed, self._typeahead = self._typeahead, []
        for c in typed:  # readline now reads (and echoes) what was typed meanwhile
            if self._closed:
                break
            self._char(c)

    # -- execution ------------------------------------------------------------------------------

    async def _run_program(self, program: list[_AndOr], ctx: _Ctx) -> int:
        status = self._status
        for andor in program:
            status = await self._run_pipeline(andor.first, ctx)
            for op, pipe in andor.rest:
                if (op == "&&") == (status == 0):
                    status = await self._run_pipeline(pipe, ctx)
            self._status = status
        return status

    async def _run_pipeline(self, pipe: _Pipeline, ctx: _Ctx) -> int:
        stdin = ctx.stdin
        status = 0
        for k, cmd in enumerate(pipe.commands):
            last = k == len(pipe.commands) - 1
            captured: list[str] = []
            sub = _Ctx(
                ctx.scope,
                ctx.out if last else captured.append,
                ctx.err,
                stdin,
                ctx.params,
                ctx.line,
            )
            # Simplification: pipeline stages run one after another, each reading the whole
            # output of the previous one (no streaming through `|`).
            status = await self._run_command(cmd, sub)
            stdin = "".join(captured)
        if pipe.negate:
            status = int(status == 0)
        self._status = status
        return status

    async def _expand(self, word: _Word, ctx: _Ctx) -> list[str]:
        """Parameter and command substitution, then field splitting of unquoted results."""
        fields: list[str] = []
        cur: list[str] = []
        have = False
        for part in word:
            if isinstance(part, _Lit):
                cur.append(part.text)
                have = True
                continue
            if isinstance(part, _Param) and part.name == "@" and part.quoted:
                args = ctx.params[1:]
                if args:
                    cur.append(args[0])
                    for a in args[1:]:
                        fields.append("".join(cur))
                        cur = [a]
                    have = True
                continue
            if isinstance(part, _Param):
                value = self._param(part.name, ctx)
            else:
                captured: list[str] = []
                sub = _Ctx(ctx.scope, captured.append, ctx.err, None, ctx.params, ctx.line)
                try:
                    program = parse(part.script)
                except (_Incomplete, ShellSyntaxError):
                    ctx.err("-bash: command substitution: syntax error\n")
                    program = []
                await self._run_program(program, sub)
                value = "".join(captured).rstrip("\n")
            if part.quoted:
                cur.append(value)
                have = True
                continue
            pieces = value.split()
            if not pieces:
                continue
            if value[:1].isspace() and (cur or have):
                fields.append("".join(cur))
                cur, have = [], False
            cur.append(pieces[0])
            have = True
            for p in pieces[1:]:
                fields.append("".join(cur))
                cur = [p]
            if value[-1:].isspace():
                fields.append("".join(cur))
                cur, have = [], False
        if cur or have:
            fields.append("".join(cur))
        return fields

    def _param(self, name: str, ctx: _Ctx) -> str:
        if name == "?":
            return str(self._status)
        if name == "$":
            return str(self._pid)
        if name == "#":
            return str(len(ctx.params) - 1)
        if name in ("@", "*"):
            return " ".join(ctx.params[1:])
        if name.isdigit():
            n = int(name)
            return ctx.params[n] if n < len(ctx.params) else ""
        return self._vars.get(name, "")

    async def _run_command(self, cmd: _Command, ctx: _Ctx) -> int:
        argv: list[str] = []
        for w in cmd.words:
            argv.extend(await self._expand(w, ctx))
        # Leading NAME=value words are assignments, not commands.
        assigns: list[tuple[str, str]] = []
        while argv and "=" in argv[0] and argv[0].split("=", 1)[0].isidentifier():
            name, value = argv.pop(0).split("=", 1)
            assigns.append((name, value))
        out, err, stdin = ctx.out, ctx.err, ctx.stdin
        for r in cmd.redirects:
            target = " ".join(await self._expand(r.target, ctx))
            if r.op == "<":
                content = self._read_text(ctx.scope, target)
                if content is None:
                    ctx.err(f"-bash: {target}: No such file or directory\n")
                    return 1
                stdin = content
                continue
            if r.op == ">&":
                sink = out if target == "1" else err if target == "2" else None
                if sink is None:
                    ctx.err(f"-bash: {target}: ambiguous redirect\n")
                    return 1
            elif target == "/dev/null":
                sink = _discard
            else:
                sink = self._file_writer(ctx.scope, target, append=r.op == ">>")
            if r.fd == 2:
                err = sink
            else:
                out = sink
        if not argv:
            for name, value in assigns:
                self._vars[name] = value
            return 0
        self._record(ctx.scope, argv, ctx.line)
        run = _Ctx(ctx.scope, out, err, stdin, ctx.params, ctx.line)
        return await self._dispatch(run, argv)

    async def run_argv(
        self, scope: str, argv: list[str], stdin: str | None = None
    ) -> tuple[str, str, int]:
        """Run one argv without a shell around it (the QEMU guest agent's exec): no parsing,
        no expansion. Returns (stdout, stderr, exit status)."""
        out: list[str] = []
        err: list[str] = []
        line = " ".join(_shell_quote(a) for a in argv)
        self._record(scope, list(argv), line)
        ctx = _Ctx(scope, out.append, err.append, stdin, [argv[0], *argv[1:]], line)
        try:
            status = await self._dispatch(ctx, list(argv))
        except _Exit as exc:
            status = exc.status
        return "".join(out), "".join(err), status

    def _record(self, scope: str, argv: list[str], line: str) -> None:
        rec = ExecRecord(self.host.node, scope, tuple(argv), line)
        self.history.append(rec)
        if self._recorder is not None:
            self._recorder.append(rec)

    async def _dispatch(self, ctx: _Ctx, argv: list[str]) -> int:
        name = argv[0]
        table = _NODE_COMMANDS if ctx.scope == "node" else _GUEST_COMMANDS
        fn = table.get(name.rsplit("/", 1)[-1] if name.startswith("/") else name)
        if fn is None:
            if ctx.scope == "node":
                ctx.err(f"-bash: {name}: command not found\n")
            else:
                ctx.err(f"bash: {name}: command not found\n")
            return 127
        return await fn(self, ctx, argv)

    # -- files ------------------------------------------------------------------------------------

    def _hostname(self, scope: str) -> str:
        if scope == "node":
            return self.host.node
        g = self.host.guest(int(scope.split(":", 1)[1]))
        return g.name if g is not None else "localhost"

    def files(self, scope: str) -> Mapping[str, FileSource]:
        custom = getattr(self.host, "files", None)
        if callable(custom):
            found: Mapping[str, FileSource] = custom(scope)
            base = dict(found)
        else:
            base = standard_files(
                self._hostname(scope), self.host.journal(scope), guest=scope != "node"
            )
        for path, text in self._files.get(scope, {}).items():
            base[path] = StaticFile(text)
        return base

    def _read_text(self, scope: str, path: str) -> str | None:
        src = self.files(scope).get(_normpath(path))
        if src is None:
            return None
        if isinstance(src, StaticFile):
            return src.content
        return "".join(src.render(e) + "\n" for e in src.journal.entries(None, src.services))

    def _file_writer(self, scope: str, path: str, *, append: bool) -> Callable[[str], None]:
        files = self._files.setdefault(scope, {})
        key = _normpath(path)
        if not append or key not in files:
            files[key] = ""

        def write(text: str) -> None:
            files[key] = files.get(key, "") + text

        return write

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.sleep_scale)


def _discard(text: str) -> None:
    pass


def _normpath(path: str) -> str:
    if not path.startswith("/"):
        path = "/root/" + path
    parts: list[str] = []
    for p in path.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if parts:
                parts.pop()
            continue
        parts.append(p)
    return "/" + "/".join(parts)


def _strip_ansi(s: str) -> str:
    out: list[str] = []
    esc: str | None = None
    for c in s:
        if esc is not None:
            esc += c
            if _escape_complete(esc):
                esc = None
            continue
        if c == "\x1b":
            esc = c
            continue
        out.append(c)
    return "".join(out)


def _escape_complete(seq: str) -> bool:
    """Whether an escape sequence collected so far (starting with ESC) is complete."""
    if len(seq) < 2:
        return False
    kind = seq[1]
    if kind == "[":
        # CSI: parameters and intermediates, then a final byte in @..~
        return len(seq) > 2 and "@" <= seq[-1] <= "~"
    if kind == "O":  # SS3 (application keypad): one more character
        return len(seq) >= 3
    if kind == "]":  # OSC: ends with BEL or ST
        return seq.endswith("\a") or seq.endswith("\x1b\\")
    return True  # two-character escapes (ESC c, Alt+key, ...)


# -- commands -----------------------------------------------------------------------------------


async def _true(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    return 0


async def _false(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    return 1


async def _exit(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    if len(argv) > 1:
        n = _parse_count(argv[1])
        if n is None:
            ctx.err(f"-bash: exit: {argv[1]}: numeric argument required\n")
            raise _Exit(2)
        raise _Exit(n & 0xFF)
    raise _Exit(sh.last_status)


async def _echo(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    args = argv[1:]
    newline, escapes = True, False
    while args and len(args[0]) > 1 and args[0][0] == "-" and set(args[0][1:]) <= set("neE"):
        flags = args.pop(0)[1:]
        newline = newline and "n" not in flags
        for f in flags:
            if f in "eE":
                escapes = f == "e"
    text = " ".join(args)
    if escapes:
        text, stop = _backslash_escapes(text)
        if stop:
            newline = False
    ctx.out(text + ("\n" if newline else ""))
    return 0


async def _printf_cmd(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    args = argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        ctx.err("printf: usage: printf [-v var] format [arguments]\n")
        return 2
    text, err = _printf(args[0], args[1:])
    ctx.out(text)
    if err:
        ctx.err(f"-bash: {err}\n")
        return 1
    return 0


async def _sh(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    args = argv[1:]
    if not args or args[0] != "-c" or len(args) < 2:
        ctx.err(f"{argv[0]}: only '-c COMMAND' is supported here\n")
        return 2
    script = args[1]
    params = args[2:] or [argv[0]]
    try:
        program = parse(script)
    except _Incomplete:
        ctx.err(f"{argv[0]}: 1: Syntax error: Unterminated quoted string\n")
        return 2
    except ShellSyntaxError as exc:
        ctx.err(f'{argv[0]}: 1: Syntax error: "{exc.token}" unexpected\n')
        return 2
    sub = _Ctx(ctx.scope, ctx.out, ctx.err, ctx.stdin, params, ctx.line)
    saved = sh._status
    try:
        return await sh._run_program(program, sub)
    except _Exit as exc:
        return exc.status
    finally:
        sh._status = saved


async def _cat(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    paths = [a for a in argv[1:] if a != "--"]
    if not paths:
        ctx.out(ctx.stdin or "")
        return 0
    status = 0
    for p in paths:
        text = sh._read_text(ctx.scope, p)
        if text is None:
            ctx.err(f"cat: {p}: No such file or directory\n")
            status = 1
        else:
            ctx.out(text)
    return status


async def _hostname(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    ctx.out(sh._hostname(ctx.scope) + "\n")
    return 0


async def _uname(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    host = sh._hostname(ctx.scope)
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-"))
    if "a" in flags:
        ctx.out(f"Linux {host} {KERNEL} {KERNEL_BUILD} x86_64 GNU/Linux\n")
    elif "r" in flags:
        ctx.out(KERNEL + "\n")
    elif "n" in flags:
        ctx.out(host + "\n")
    else:
        ctx.out("Linux\n")
    return 0


async def _whoami(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    ctx.out("root\n")
    return 0


async def _pwd(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    ctx.out("/root\n" if ctx.scope == "node" else "/\n")
    return 0


async def _df(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    if ctx.scope == "node":
        ctx.out(
            "Filesystem            Size  Used Avail Use% Mounted on\n"
            "udev                   16G     0   16G   0% /dev\n"
            "tmpfs                 3.2G  1.6M  3.2G   1% /run\n"
            "/dev/mapper/pve-root   94G   12G   78G  14% /\n"
            "/dev/fuse             128M   24K  128M   1% /etc/pve\n"
        )
    else:
        vmid = int(ctx.scope.split(":", 1)[1])
        used = 1 + vmid % 7
        ctx.out(
            "Filesystem                        Size  Used Avail Use% Mounted on\n"
            f"/dev/mapper/pve-vm--{vmid}--disk--0  7.8G  {used}.2G  "
            f"{6 - used % 6}.2G  {used * 12 % 100:2d}% /\n"
            "none                              492K  4.0K  488K   1% /dev\n"
            "tmpfs                              16G     0   16G   0% /dev/shm\n"
        )
    return 0


def _parse_duration(text: str) -> float | None:
    mult = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}.get(text[-1:])
    num = text[:-1] if mult is not None else text
    try:
        value = float(num)
    except ValueError:
        return None
    return value * (mult or 1.0) if value >= 0 else None


async def _sleep(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    if len(argv) < 2:
        ctx.err("sleep: missing operand\n")
        return 1
    total = 0.0
    for a in argv[1:]:
        d = _parse_duration(a)
        if d is None:
            ctx.err(f"sleep: invalid time interval '{a}'\n")
            return 1
        total += d
    await sh.sleep(total)
    return 0


async def _journalctl(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    follow = False
    lines: int | None = None
    units: list[str] = []
    after: str | None = None
    output = "short"
    args = argv[1:]
    i = 0

    def value(opt: str) -> str | None:
        nonlocal i
        a = args[i]
        if a.startswith("--") and "=" in a:
            return a.split("=", 1)[1]
        if not a.startswith("--") and len(a) > 2:
            return a[2:]
        i += 1
        if i >= len(args):
            ctx.err(f"journalctl: option '{opt}' requires an argument\n")
            return None
        return args[i]

    while i < len(args):
        a = args[i]
        key = a.split("=", 1)[0] if a.startswith("--") else a[:2]
        if a in ("-f", "--follow"):
            follow = True
        elif a in ("--no-pager", "-q", "--quiet", "-a", "--all", "-b", "--boot", "--no-hostname"):
            pass
        elif key in ("-n", "--lines"):
            v = value(key)
            if v is None:
                return 1
            n = _parse_count(v)
            if n is None:
                ctx.err(f"Failed to parse lines '{v}'.\n")
                return 1
            lines = n
        elif key in ("-u", "--unit"):
            v = value(key)
            if v is None:
                return 1
            units.append(v)
        elif key == "--after-cursor":
            v = value(key)
            if v is None:
                return 1
            after = v
        elif key in ("-o", "--output"):
            v = value(key)
            if v is None:
                return 1
            if v not in ("short", "json", "cat"):
                ctx.err(f"Unknown output format '{v}'.\n")
                return 1
            output = v
        elif a.startswith("-"):
            ctx.err(f"journalctl: unrecognized option '{a}'\n")
            return 1
        else:
            ctx.err("Failed to add match '" + a + "': Invalid argument\n")
            return 1
        i += 1

    journal = sh.host.journal(ctx.scope)
    if journal is None:
        ctx.err("No journal files were found.\n-- No entries --\n")
        return 1 if not follow else 0

    def render(e: JournalEntry) -> str:
        if output == "json":
            return format_json(e) + "\n"
        if output == "cat":
            return e.message + "\n"
        return format_line(e) + "\n"

    if lines is None and follow:
        lines = 10
    services = units or None
    try:
        found = journal.entries(lines, services, after_cursor=after)
    except CursorError:
        ctx.err("Failed to seek to cursor: Invalid argument\n")
        return 1
    if not found and not follow and output == "short":
        ctx.out("-- No entries --\n")
    ctx.out("".join(render(e) for e in found))
    if not follow:
        return 0
    start = found[-1].cursor if found else (after or journal.last_cursor)
    async for e in journal.follow(start, services):
        ctx.out(render(e))
    return 0  # pragma: no cover - follow only ends by ^C or close


async def _tail(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    follow = False
    count = 10
    quiet = False
    paths: list[str] = []
    args = argv[1:]
    i = 0
    options_done = False
    while i < len(args):
        a = args[i]
        if options_done or not a.startswith("-") or a == "-":
            paths.append(a)
        elif a == "--":
            options_done = True
        elif a in ("-f", "-F", "--follow", "--retry"):
            follow = follow or a != "--retry"
        elif a in ("-q", "--quiet", "--silent"):
            quiet = True
        elif a == "-n" or a.startswith("-n") or a.startswith("--lines"):
            if a in ("-n", "--lines"):
                i += 1
                if i >= len(args):
                    ctx.err("tail: option requires an argument -- 'n'\n")
                    return 1
                v = args[i]
            else:
                v = a.split("=", 1)[1] if a.startswith("--lines=") else a[2:]
            n = _parse_count(v)
            if n is None:
                ctx.err(f"tail: invalid number of lines: '{v}'\n")
                return 1
            count = n
        else:
            ctx.err(f"tail: invalid option -- '{a.lstrip('-')[:1]}'\n")
            ctx.err("Try 'tail --help' for more information.\n")
            return 1
        i += 1
    if not paths:
        text = ctx.stdin or ""
        kept = text.splitlines(keepends=True)[-count:] if count else []
        ctx.out("".join(kept))
        return 0

    files = sh.files(ctx.scope)
    status = 0
    open_files: list[tuple[str, FileSource]] = []
    # Where each journal stood when its last lines were shown: following resumes exactly there.
    starts: dict[int, str | None] = {}
    headers = len(paths) > 1 and not quiet
    last_shown: str | None = None
    for p in paths:  # in order, like tail: errors appear between the files' sections
        src = files.get(_normpath(p))
        if src is None:
            ctx.err(f"tail: cannot open '{p}' for reading: No such file or directory\n")
            status = 1
            continue
        open_files.append((p, src))
        if headers:
            ctx.out(("\n" if last_shown is not None else "") + f"==> {p} <==\n")
            last_shown = p
        if isinstance(src, StaticFile):
            kept = src.content.splitlines(keepends=True)[-count:] if count else []
            ctx.out("".join(kept))
        else:
            found = src.journal.entries(count, src.services)
            starts[id(src)] = src.journal.last_cursor
            ctx.out("".join(src.render(e) + "\n" for e in found))
    if not follow:
        return status
    followed = [(p, s) for p, s in open_files if isinstance(s, JournalFile)]
    if not open_files:
        # The lab never creates files later, so waiting like `tail -F` would hang forever.
        ctx.err("tail: no files remaining\n")
        return 1
    if not followed:
        await asyncio.Event().wait()  # static files never grow: follow until interrupted
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def pump(path: str, src: JournalFile) -> None:
        async for e in src.journal.follow(starts.get(id(src)), src.services):
            queue.put_nowait((path, src.render(e) + "\n"))

    async with asyncio.TaskGroup() as tg:
        for p, s in followed:
            assert isinstance(s, JournalFile)
            tg.create_task(pump(p, s))
        while True:
            path, text = await queue.get()
            if headers and path != last_shown:
                ctx.out(f"\n==> {path} <==\n")
                last_shown = path
            ctx.out(text)
    return status  # pragma: no cover


async def _pct(sh: NodeShell, ctx: _Ctx, argv: list[str]) -> int:
    node = sh.host.node
    if len(argv) < 2:
        ctx.err("ERROR: no command specified\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n")
        return 255
    sub = argv[1]
    if sub not in ("exec", "status", "list"):
        ctx.err(f"ERROR: unknown command 'pct {sub}'\n")
        return 255
    if sub == "list":
        ctx.out("VMID       Status     Lock         Name                \n")
        return 0
    if len(argv) < 3 or not argv[2].isdigit():
        ctx.err(
            f"400 Parameter verification failed.\nvmid: invalid format - value does not look "
            f"like a valid VM ID\npct {sub} <vmid>\n"
        )
        return 255
    vmid = int(argv[2])
    g = sh.host.guest(vmid)
    if g is None or g.type != "lxc" or g.node != node:
        ctx.err(f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist\n")
        return 2
    if sub == "status":
        ctx.out(f"status: {'running' if g.running else 'stopped'}\n")
        return 0
    inner = argv[3:]
    if inner and inner[0] == "--":
        inner = inner[1:]
    if not g.running:
        ctx.err(f"CT {vmid} not running\n")
        return 255
    if not inner:
        ctx.err("missing command\n")
        return 255
    scope = f"guest:{vmid}"
    sh._record(scope, inner, ctx.line)
    run = _Ctx(scope, ctx.out, ctx.err, ctx.stdin, ["sh"], ctx.line)
    fn = _GUEST_COMMANDS.get(inner[0].rsplit("/", 1)[-1])
    if fn is None or inner[0] == "exit":  # `exit` is a shell builtin, not a program
        # pct runs argv directly through lxc-attach: no shell, so no "command not found".
        ctx.err(
            f"lxc-attach: {vmid}: ../src/lxc/attach.c: lxc_attach_run_command: 1841 "
            f'No such file or directory - Failed to exec "{inner[0]}"\n'
        )
        return 255
    return await fn(sh, run, inner)


_COMMON: dict[str, _Builtin] = {
    "true": _true,
    "false": _false,
    "echo": _echo,
    "printf": _printf_cmd,
    "sh": _sh,
    "bash": _sh,
    "dash": _sh,
    "cat": _cat,
    "hostname": _hostname,
    "uname": _uname,
    "whoami": _whoami,
    "pwd": _pwd,
    "df": _df,
    "sleep": _sleep,
    "journalctl": _journalctl,
    "tail": _tail,
}
_NODE_COMMANDS: dict[str, _Builtin] = {**_COMMON, "exit": _exit, "logout": _exit, "pct": _pct}
_GUEST_COMMANDS: dict[str, _Builtin] = {**_COMMON, "exit": _exit}
