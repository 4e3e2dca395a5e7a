"""API-client commands: `pxproxy stats | journal | exec` against a running daemon's API.

They print what the streaming endpoints send as it arrives. Exit codes: 0 done, 1 the API
answered with an error (its problem document's `detail` is printed), 2 the API could not be
reached or the connection broke, 130 interrupted; `exec` exits with the command's own status.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from . import __version__
from .runtime import run

if TYPE_CHECKING:
    import aiohttp

DEFAULT_API = "http://127.0.0.1:8081"
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130
CONNECT_TIMEOUT_S = 10.0
# Stats send a line every second: a minute of silence means the stream is dead.
STATS_READ_TIMEOUT_S = 60.0

_EXIT_LINE_RE = re.compile(rb"\[exit status (-?\d+)\]\r?")
_STATS_HEADER = ("STATUS", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O")
_STATS_WIDTHS = (10, 8, 22, 8, 22, 0)
# Keys an NDJSON exec event may carry its output under; stderr ones go to our stderr.
_OUTPUT_KEYS = ("line", "data", "text", "output", "out", "stdout", "stderr", "err")
_STDERR_KEYS = ("stderr", "err")


class CliError(Exception):
    """Ends the command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# -- the command line ---------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register stats, journal and exec on the main parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        metavar="URL",
        help=f"the daemon's API (default: $PXPROXY_API, else {DEFAULT_API})",
    )
    common.add_argument("--token", help="bearer token of the API (default: $PXPROXY_TOKEN)")

    stats = sub.add_parser(
        "stats",
        parents=[common],
        help="live load of a guest, one line per second",
        description="Stream a guest's status, CPU, memory, network and disk I/O.",
    )
    stats.add_argument("ref", help="guest: name | vmid | node/vmid | cluster:vmid")
    stats.add_argument("--once", action="store_true", help="one line, then exit")
    stats.add_argument("--json", action="store_true", help="NDJSON with raw numbers and rates")
    stats.set_defaults(func=cmd_stats)

    journal = sub.add_parser(
        "journal",
        parents=[common],
        help="follow the journal of a node, or of a guest",
        description="Print the last lines of a journal, then follow it (Ctrl-C to stop).",
    )
    journal.add_argument("node")
    journal.add_argument("vmid", nargs="?", type=int, help="a guest on the node (else the node)")
    journal.add_argument(
        "-n", "--lines", type=int, dest="limit", metavar="N", help="lines of history (1..1000)"
    )
    journal.add_argument(
        "-u",
        "--unit",
        action="append",
        dest="units",
        default=[],
        metavar="UNIT",
        help="only this systemd unit (repeatable)",
    )
    journal.add_argument("--no-follow", action="store_true", help="print the history and exit")
    journal.set_defaults(func=cmd_journal)

    exec_ = sub.add_parser(
        "exec",
        parents=[common],
        help="run a command in a guest; exits with its status",
        description="Run ARGV inside the guest and stream its output; exit with its status.",
        usage="%(prog)s [--api URL] [--token TOKEN] node vmid -- ARGV...",
    )
    exec_.add_argument("node")
    exec_.add_argument("vmid", type=int)
    exec_.add_argument("argv", nargs=argparse.REMAINDER, help="the command and its arguments")
    exec_.set_defaults(func=cmd_exec, exec_parser=exec_)


def cmd_stats(args: argparse.Namespace) -> int:
    params: list[tuple[str, str]] = []
    if args.once:
        params.append(("stream", "0"))
    if args.json:
        params.append(("format", "json"))
    return _main(args, _stats(args, f"/stats/{_seg(args.ref)}", params))


def cmd_journal(args: argparse.Namespace) -> int:
    path = f"/journal/{_seg(args.node)}"
    if args.vmid is not None:
        path += f"/{args.vmid}"
    params: list[tuple[str, str]] = [("service", unit) for unit in args.units]
    if args.limit is not None:
        params.append(("limit", str(args.limit)))
    if args.no_follow:
        params.append(("follow", "0"))
    return _main(args, _journal(args, path, params))


def cmd_exec(args: argparse.Namespace) -> int:
    argv = _own_options(args, list(args.argv))
    if not argv:
        args.exec_parser.error("give the command after --, e.g. pxproxy exec pve1 101 -- uptime")
    return _main(args, _exec(args, f"/exec/{_seg(args.node)}/{args.vmid}", argv))


def _own_options(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """The command's argv from what follows node and vmid. argparse hands over everything after
    them untouched (so a literal "--" or "-n" of the command survives); our own --api/--token
    may still stand before the first "--" and are taken from there."""
    if "--" not in rest:
        return rest
    split = rest.index("--")
    head, tail = rest[:split], rest[split + 1 :]
    found: dict[str, str] = {}
    i = 0
    while i < len(head):
        name, eq, value = head[i].partition("=")
        if name not in ("--api", "--token"):
            return rest  # not ours: all of it is the command, "--" included
        if not eq:
            if i + 1 >= len(head):
                return rest
            i += 1
            value = head[i]
        found[name[2:]] = value
        i += 1
    for key, value in found.items():
        setattr(args, key, value)
    return tail


# -- running a command --------------------------------------------------------------------------


def _main(args: argparse.Namespace, work: Coroutine[Any, Any, int]) -> int:
    name = args.command
    try:
        code: int = run(work)
    except CliError as exc:
        print(f"pxproxy {name}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        # Leaving the session closes the connection, which ends the stream on the daemon.
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `pxproxy journal ... | head`: the reader left; stop quietly.
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _api(args: argparse.Namespace) -> str:
    url: str = args.api or os.environ.get("PXPROXY_API") or DEFAULT_API
    if not url.startswith(("http://", "https://")):
        url = "http://" + url  # "127.0.0.1:8081" is what the config's listen key looks like
    return url.rstrip("/")


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {"User-Agent": f"pxproxy-cli/{__version__}"}
    token = args.token or os.environ.get("PXPROXY_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _seg(value: str) -> str:
    """A path part; "/" stays so node/vmid refs read as the API documents them."""
    return quote(value, safe="/:")


async def _request(
    args: argparse.Namespace,
    method: str,
    path: str,
    params: Sequence[tuple[str, str]],
    read_timeout_s: float | None,
    body: Mapping[str, Any] | None,
    handle: Callable[[aiohttp.ClientResponse], Awaitable[int]],
) -> int:
    """Send one request and hand the successful response to `handle`; map failures to exits."""
    import aiohttp

    api = _api(args)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=read_timeout_s
    )
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, api + path, params=list(params), json=body, headers=_headers(args)
            ) as resp,
        ):
            if resp.status >= 400:
                sent_token = "Authorization" in _headers(args)
                raise CliError(await _problem(resp, sent_token), EXIT_API_ERROR)
            code: int = await handle(resp)
            return code
    except aiohttp.InvalidURL:
        raise CliError(f"invalid API URL {api!r}", EXIT_UNREACHABLE) from None
    except aiohttp.ClientConnectorError as exc:
        raise CliError(
            f"cannot reach the pxproxy API at {api}: {_reason(exc.os_error)}"
            " (is the daemon running? set --api or $PXPROXY_API)",
            EXIT_UNREACHABLE,
        ) from None
    except TimeoutError:
        raise CliError(f"the pxproxy API at {api} stopped answering", EXIT_UNREACHABLE) from None
    except aiohttp.ClientError as exc:
        raise CliError(
            f"connection to the pxproxy API at {api} broke: {exc or type(exc).__name__}",
            EXIT_UNREACHABLE,
        ) from None


def _reason(error: OSError) -> str:
    # asyncio's strerror is "Connect call failed (...)"; the errno's text says what happened.
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return str(error.strerror or error)  # resolver errors have negative codes


async def _problem(resp: aiohttp.ClientResponse, sent_token: bool) -> str:
    """The problem document's detail, else the status line and the start of the body."""
    text = (await resp.read())[:2000].decode("utf-8", "replace")
    detail = ""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        detail = doc["detail"]
    elif text.strip():
        detail = text.strip().splitlines()[0]
    message = f"{resp.status} {resp.reason or ''}".rstrip()
    if detail:
        message += f": {detail}"
    if resp.status == 401 and not sent_token:
        message += " (set --token or $PXPROXY_TOKEN)"
    return message


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines (without their newline) as they arrive; a last partial line too."""
    pending = b""
    async for chunk in resp.content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line
    if pending:
        yield pending


def _write(stream: BinaryIO, data: bytes) -> None:
    stream.write(data)
    stream.flush()  # a pipe is block-buffered; the point is to see lines as they come


# -- stats --------------------------------------------------------------------------------------


async def _stats(args: argparse.Namespace, path: str, params: list[tuple[str, str]]) -> int:
    raw = bool(args.json)

    async def handle(resp: aiohttp.ClientResponse) -> int:
        out = sys.stdout.buffer
        header = False
        async for line in _lines(resp):
            if raw:
                _write(out, line + b"\n")
                continue
            row = format_stats_line(line.decode("utf-8", "replace"))
            if row is None:  # not the documented shape: show it as sent
                _write(out, line + b"\n")
                continue
            if not header:
                _write(out, (_columns(_STATS_HEADER) + "\n").encode())
                header = True
            _write(out, (row + "\n").encode())
        return 0

    return await _request(args, "GET", path, params, STATS_READ_TIMEOUT_S, None, handle)


def format_stats_line(line: str) -> str | None:
    """`running|31.1%|9.6GiB/20GiB|48.87%|4.7GiB/3.3GiB|25GiB/36GiB` as aligned columns."""
    fields = line.strip().split("|")
    if len(fields) != len(_STATS_HEADER):
        return None
    return _columns(tuple(f.replace("/", " / ") for f in fields))


def _columns(fields: Sequence[str]) -> str:
    return "".join(
        f.ljust(width - 1) + " " if width else f
        for f, width in zip(fields, _STATS_WIDTHS, strict=True)
    ).rstrip()


# -- journal ------------------------------------------------------------------------------------


async def _journal(args: argparse.Namespace, path: str, params: list[tuple[str, str]]) -> int:
    async def handle(resp: aiohttp.ClientResponse) -> int:
        out = sys.stdout.buffer
        async for chunk in resp.content.iter_any():
            _write(out, chunk)
        return 0

    # A quiet journal may say nothing for hours: no read timeout.
    return await _request(args, "GET", path, params, None, None, handle)


# -- exec ---------------------------------------------------------------------------------------


async def _exec(args: argparse.Namespace, path: str, argv: list[str]) -> int:
    async def handle(resp: aiohttp.ClientResponse) -> int:
        if resp.content_type in ("application/x-ndjson", "application/json"):
            status = await _exec_ndjson(resp)
        else:  # a daemon that answered text: the last line is "[exit status N]"
            status = await _exec_text(resp)
        if status is None:
            raise CliError("the output ended without the command's exit status", EXIT_API_ERROR)
        # Shells report statuses as 0..255; keep what the command said within that.
        return status & 0xFF

    return await _request(args, "POST", path, [("format", "json")], None, {"argv": argv}, handle)


async def _exec_ndjson(resp: aiohttp.ClientResponse) -> int | None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    status: int | None = None
    async for line in _lines(resp):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            _write(out, line + b"\n")
            continue
        if not isinstance(event, dict):
            _write(out, line + b"\n")
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
                _write(err if to_err else out, data)
                break
    return status


async def _exec_text(resp: aiohttp.ClientResponse) -> int | None:
    """Output passes at once, except a line that looks like the exit status: it is held until
    the stream shows whether it was the last line (the real status) or output."""
    out = sys.stdout.buffer
    held: bytes | None = None
    async for line in _lines(resp):
        if held is not None:
            _write(out, held + b"\n")
            held = None
        if _EXIT_LINE_RE.fullmatch(line):
            held = line
        else:
            _write(out, line + b"\n")
    match = _EXIT_LINE_RE.fullmatch(held) if held is not None else None
    return int(match.group(1)) if match else None
