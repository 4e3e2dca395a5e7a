"""`POST /exec/{node}/{vmid}`, `GET /journal/{node}/{vmid}`, `GET /tail/{node}/{vmid}` and
`GET /tail/{node}`: commands in guests (and node tail), streamed as they produce output.

Order of checks, so that hostile input never reaches Proxmox: scope, guest, allowlist, then
validation (400, audit-logged with the rule), then whether a shell is possible (501), and only
then the termproxy session or the guest agent call.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from aiohttp import web

from ...config.models import ApiToken
from ...error_table import problem_for
from ...inventory.model import Guest, Node
from ...pve.errors import PveError
from ...pve.termproxy import SHELL_TICKET_NEEDED, ShellTimeoutError, Sink, StartHook
from ...shutdown import STOPPING_MESSAGE, DaemonStopping
from ...streams.guest_commands import (
    NO_JOURNAL,
    in_container,
    journal_argv,
    journal_fallback_argv,
    tail_argv,
)
from ...streams.shell_runner import ShellRunner, StreamSettings, runner_for
from ...streams.validation import (
    MAX_FILES,
    MAX_UNITS,
    ValidationError,
    validate_argv,
    validate_flag,
    validate_limit,
    validate_path,
    validate_timeout,
    validate_unit,
)
from ..audit import AuditRecord
from ..auth import has_scope
from ..context import PRINCIPAL
from ..problems import ApiError
from ._common import GuestDenied, app_context, context, require, require_for_guest
from ._node_lookup import guest_on_node, one_node

__all__ = [
    "STREAMS",
    "exec_in_guest",
    "exec_on_node",
    "guest_streams_setup",
    "journal_in_guest",
    "setup_guest_streams",
    "tail_in_guest",
    "tail_on_node",
]

log = logging.getLogger(__name__)

STREAMS = web.AppKey("guest_streams", ShellRunner)
DISCONNECT_POLL_S = 0.25
MAX_BODY = 16 * 1024
Format = Literal["text", "json"]


def guest_streams_setup(
    settings: StreamSettings | None = None,
) -> Callable[[web.Application], None]:
    """A build_app setup step: the ShellRunner under STREAMS, closed on app cleanup."""
    settings = settings or StreamSettings()

    def setup(app: web.Application) -> None:
        ctx = app_context(app)
        runner = runner_for(ctx.cluster_names, ctx.config.proxmox, ctx.clients, settings)
        app[STREAMS] = runner

        async def close(_: web.Application) -> None:
            await runner.close()

        app.on_cleanup.append(close)

    return setup


setup_guest_streams = guest_streams_setup()


# ---------------------------------------------------------------------------------- output


class _Output:
    """The streamed answer: prepared on the first byte, so errors before it stay problems."""

    def __init__(self, request: web.Request, fmt: Format) -> None:
        self.request = request
        self.fmt = fmt
        self.response: web.StreamResponse | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_line_start = True

    async def _prepare(self) -> web.StreamResponse:
        if self.response is None:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/x-ndjson"
                    if self.fmt == "json"
                    else "text/plain; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Content-Type-Options": "nosniff",
                }
            )
            response.enable_chunked_encoding()
            await response.prepare(self.request)
            self.response = response
        return self.response

    async def start(self) -> None:
        await self._prepare()

    async def write(self, data: bytes) -> None:
        response = await self._prepare()
        if self.fmt == "text":
            await response.write(data)
            self._at_line_start = data.endswith(b"\n")
            return
        text = self._decoder.decode(data)
        if text:
            await response.write(_ndjson({"output": text}))

    async def _line(self, text: str, obj: dict[str, Any]) -> None:
        response = await self._prepare()
        if self.fmt == "json":
            tail = self._decoder.decode(b"", final=True)
            if tail:
                await response.write(_ndjson({"output": tail}))
            await response.write(_ndjson(obj))
        else:
            prefix = b"" if self._at_line_start else b"\n"
            await response.write(prefix + text.encode() + b"\n")
            self._at_line_start = True

    async def status(self, status: int, duration_s: float) -> None:
        await self._line(
            f"[exit status {status}]",
            {"exit_status": status, "duration_s": round(duration_s, 3)},
        )

    async def error(self, message: str, duration_s: float) -> None:
        await self._line(
            f"[error: {message}]", {"error": message, "duration_s": round(duration_s, 3)}
        )

    async def finish(self) -> web.StreamResponse:
        response = await self._prepare()
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


def _ndjson(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class _ClientGone(Exception):
    """The HTTP client went away: the command's shell must be closed."""


async def _until_gone(request: web.Request) -> None:
    # aiohttp does not cancel handlers when the client leaves; a follow that prints nothing
    # would keep its shell forever without this watch.
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(DISCONNECT_POLL_S)


async def _while_connected(request: web.Request, work: Awaitable[int]) -> int:
    """Run `work`; cancel it (which interrupts the command and closes its websocket) once the
    client disconnects (_ClientGone) or the daemon begins to stop (DaemonStopping)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_until_gone(request), name="client-watch")
    stop = asyncio.create_task(context(request).stopping.wait(), name="stop-watch")
    try:
        await asyncio.wait({task, watch, stop}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise DaemonStopping if stop.done() else _ClientGone
    finally:
        for t in (task, watch, stop):
            t.cancel()
        await asyncio.gather(task, watch, stop, return_exceptions=True)


# --------------------------------------------------------------------------------- helpers


def _runner(request: web.Request) -> ShellRunner:
    runner = context(request).shells or request.app.get(STREAMS)
    if runner is None:  # a wiring mistake, not the client's: say which step is missing
        raise ApiError(
            500, "Internal Server Error", "guest streams are not set up (setup_guest_streams)"
        )
    return runner


def _guest(request: web.Request) -> Guest:
    # {node} is a name, an alias or cluster:node; a vmid on another node: 404 naming it.
    return guest_on_node(request)


def _node(request: web.Request) -> Node:
    return one_node(request, request.match_info["node"])


def _token_config(request: web.Request) -> ApiToken | None:
    name = request[PRINCIPAL].name
    return next((t for t in context(request).config.api.tokens if t.name == name), None)


def _path_allowlist(request: web.Request) -> Sequence[str] | None:
    # Optional per-token prefixes (`paths:` on an api token); None: any path, []: none.
    token = _token_config(request)
    return token.paths if token is not None else None


def _check_query(request: web.Request, allowed: set[str]) -> None:
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ValidationError(
            "query", f"unknown query parameter {unknown[0]!r}; use {', '.join(sorted(allowed))}"
        )


def _one(request: web.Request, key: str) -> str | None:
    values = request.query.getall(key, [])
    if len(values) > 1:
        raise ValidationError("query", f"{key} may be given once")
    return values[0] if values else None


def _format(request: web.Request) -> Format:
    value = _one(request, "format")
    if value in (None, "text"):
        return "text"
    if value in ("json", "ndjson"):
        return "json"
    raise ValidationError("format", "format must be text or json")


def _audit(
    request: web.Request,
    action: str,
    target: str,
    detail: dict[str, Any],
    result: str,
    duration_s: float = 0.0,
) -> None:
    context(request).audit.write(
        AuditRecord(
            token=request[PRINCIPAL].name,
            action=action,
            guest=target,
            detail=detail,
            result=result,
            duration_s=round(duration_s, 3),
        )
    )


def _rejected(
    request: web.Request, action: str, target: str, detail: dict[str, Any], exc: ValidationError
) -> ApiError:
    _audit(request, action, target, detail, f"rejected: {exc.rule}")
    return ApiError(400, "Bad Request", exc.message, rule=exc.rule)


Run = Callable[[Sink, StartHook | None], Awaitable[int]]


def _via_agent(
    runner: ShellRunner, guest: Guest, argv: list[str], timeout_s: float | None = None
) -> Run:
    """Through the QEMU guest agent, which cannot stream: never a follow, always bounded
    (by default the snapshot timeout)."""
    bound = runner.settings.snapshot_timeout_s if timeout_s is None else timeout_s

    async def run(sink: Sink, on_start: StartHook | None) -> int:
        return await runner.run_agent(
            guest.cluster, guest.node, guest.vmid, argv, sink, timeout_s=bound
        )

    return run


def _via_shell(
    runner: ShellRunner, cluster: str, node: str, argv: list[str], timeout_s: float | None
) -> Run:
    """A command typed into the node's terminal (`pct exec` already in argv for a guest)."""

    async def run(sink: Sink, on_start: StartHook | None) -> int:
        return await runner.run_shell(
            cluster, node, argv, sink, timeout_s=timeout_s, on_start=on_start
        )

    return run


async def _stream(
    request: web.Request,
    fmt: Format,
    *,
    action: str,
    target: str,
    detail: dict[str, Any],
    run: Run,
    always_status: bool,
    early_headers: bool = False,
) -> web.StreamResponse:
    """Run, stream, report the exit status, audit; errors before output become problems.
    `early_headers` (follow streams): answer 200 as soon as the command started, so a client
    waiting for new lines is not left without headers."""
    out = _Output(request, fmt)
    started = time.monotonic()
    try:
        status = await _while_connected(
            request, run(out.write, out.start if early_headers else None)
        )
    except (_ClientGone, ConnectionError):
        _audit(request, action, target, detail, "client disconnected", time.monotonic() - started)
        return out.response or web.Response(status=499)
    except DaemonStopping:
        elapsed = time.monotonic() - started
        _audit(request, action, target, detail, "interrupted: pxproxy is stopping", elapsed)
        with contextlib.suppress(ConnectionError):
            await out.error(f"{STOPPING_MESSAGE}; the command was interrupted", elapsed)
        return await out.finish()
    except asyncio.CancelledError:  # the server cancelled the handler (client gone, shutdown)
        _audit(request, action, target, detail, "cancelled", time.monotonic() - started)
        raise
    except PveError as exc:
        elapsed = time.monotonic() - started
        result = "timeout" if isinstance(exc, ShellTimeoutError) else f"failed: {exc.message}"
        _audit(request, action, target, detail, result, elapsed)
        if out.response is None:
            raise problem_for(exc) from None
        with contextlib.suppress(ConnectionError):
            await out.error(exc.message, elapsed)
        return await out.finish()
    elapsed = time.monotonic() - started
    _audit(request, action, target, detail, f"exit {status}", elapsed)
    with contextlib.suppress(ConnectionError):
        if always_status or status != 0:
            await out.status(status, elapsed)
    return await out.finish()


def _require_running(guest: Guest) -> None:
    if guest.status != "running":
        raise ApiError(409, "Conflict", f"guest {guest.ref} is {guest.status}, not running")


def _require_shell(runner: ShellRunner, cluster: str) -> None:
    if not runner.shells_available(cluster):
        raise ApiError(501, "Not Implemented", SHELL_TICKET_NEEDED)


# -------------------------------------------------------------------------------- handlers


def _exec_target(request: web.Request, action: str) -> tuple[Guest, ShellRunner]:
    """The guest of a command endpoint, after the checks every one of them makes: the exec
    scope first (so a token without it learns nothing about guests), then the allowlist
    (a refusal is audited with its rule)."""
    require(request, "exec", action)
    guest = _guest(request)
    try:
        require_for_guest(request, "exec", guest)
    except GuestDenied as exc:
        _audit(request, action, guest.ref, {"node": guest.node}, f"denied: {exc.reason}")
        raise
    return guest, _runner(request)


async def exec_in_guest(request: web.Request) -> web.StreamResponse:
    guest, runner = _exec_target(request, "exec")
    detail: dict[str, Any] = {"node": guest.node}
    try:
        fmt, argv, timeout_s = await _exec_body(request, runner, detail)
    except ValidationError as exc:
        raise _rejected(request, "exec", guest.ref, detail, exc) from None
    _require_running(guest)
    if guest.type == "qemu":
        detail["via"] = "agent"
        run = _via_agent(runner, guest, argv, timeout_s)
    else:
        _require_shell(runner, guest.cluster)
        detail["via"] = "shell"
        run = _via_shell(
            runner, guest.cluster, guest.node, in_container(guest.vmid, argv), timeout_s
        )
    return await _stream(
        request, fmt, action="exec", target=guest.ref, detail=detail, run=run, always_status=True
    )


async def _exec_body(
    request: web.Request, runner: ShellRunner, detail: dict[str, Any]
) -> tuple[Format, list[str], float]:
    """An exec request's format, argv (also put in the audit `detail`) and timeout; raises
    ValidationError naming the rule."""
    _check_query(request, {"format"})
    fmt = _format(request)
    body = await _json_body(request)
    unknown = sorted(set(body) - {"argv", "timeout"})
    if unknown:
        raise ValidationError("body", f"unknown field {unknown[0]!r}; use argv, timeout")
    argv = validate_argv(body.get("argv"))
    detail["argv"] = argv
    return fmt, argv, validate_timeout(body.get("timeout"), runner.settings.exec_timeout_s)


async def _json_body(request: web.Request) -> dict[str, Any]:
    too_large = ValidationError("body", f"the body is larger than {MAX_BODY} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large
    # Bounded in size and in time, like a head: a trickled body must not hold the handler.
    limit_s = context(request).config.api.header_timeout
    raw = bytearray()
    try:
        async with asyncio.timeout(limit_s):
            while chunk := await request.content.read(MAX_BODY + 1 - len(raw)):
                raw += chunk
                if len(raw) > MAX_BODY:
                    raise too_large
    except TimeoutError:
        raise ValidationError("body", f"the body did not arrive within {limit_s:g}s") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("body", 'the body must be JSON: {"argv": [...]}') from None
    if not isinstance(body, dict):
        raise ValidationError("body", 'the body must be a JSON object: {"argv": [...]}')
    return body


class _NoJournal(Exception):
    """journalctl said the container has no journal: switch to the syslog files."""


class _JournalProbe:
    """Holds output back until the first line shows whether journald answered at all."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._head = b""
        self._decided = False

    async def __call__(self, data: bytes) -> None:
        if self._decided:
            await self._sink(data)
            return
        self._head += data
        if NO_JOURNAL in self._head:
            raise _NoJournal
        if b"\n" in self._head or len(self._head) > 512:
            await self.flush()

    async def flush(self) -> None:
        if not self._decided:
            self._decided = True
            if NO_JOURNAL in self._head:
                raise _NoJournal
            if self._head:
                await self._sink(self._head)


async def journal_in_guest(request: web.Request) -> web.StreamResponse:
    guest, runner = _exec_target(request, "journal")
    detail: dict[str, Any] = {"node": guest.node}
    try:
        _check_query(request, {"limit", "service", "follow"})
        limit = validate_limit(_one(request, "limit"))
        services = request.query.getall("service", [])
        if len(services) > MAX_UNITS:
            raise ValidationError("service", f"at most {MAX_UNITS} services")
        units = [validate_unit(s, f"service[{i}]") for i, s in enumerate(services)]
        follow = validate_flag(_one(request, "follow"), "follow", True)
        if follow and guest.type == "qemu":
            raise ValidationError(
                "follow",
                "QEMU guests run journalctl through the guest agent, which cannot stream: "
                "use follow=0",
            )
    except ValidationError as exc:
        raise _rejected(request, "journal", guest.ref, detail, exc) from None
    argv = journal_argv(limit, units, follow)
    detail["argv"] = argv
    _require_running(guest)
    timeout_s = None if follow else runner.settings.snapshot_timeout_s
    if guest.type == "qemu":
        detail["via"] = "agent"
        run = _via_agent(runner, guest, argv)
    else:
        _require_shell(runner, guest.cluster)
        detail["via"] = "shell"

        async def run(sink: Sink, on_start: StartHook | None) -> int:
            probe = _JournalProbe(sink)
            try:
                status = await runner.run_shell(
                    guest.cluster,
                    guest.node,
                    in_container(guest.vmid, argv),
                    probe,
                    timeout_s=timeout_s,
                    on_start=on_start,
                )
                await probe.flush()
                return status
            except _NoJournal:
                pass
            fallback = journal_fallback_argv(limit, follow)
            detail["fallback"] = fallback
            return await runner.run_shell(
                guest.cluster,
                guest.node,
                in_container(guest.vmid, fallback),
                sink,
                timeout_s=timeout_s,
                on_start=on_start,
            )

    return await _stream(
        request, "text", action="journal", target=guest.ref, detail=detail, run=run,
        always_status=False, early_headers=follow,
    )  # fmt: skip


def _tail_params(request: web.Request) -> tuple[int, list[str], bool]:
    _check_query(request, {"limit", "file", "follow"})
    limit = validate_limit(_one(request, "limit"), default=10)
    files = request.query.getall("file", [])
    if not files:
        raise ValidationError("file", "give at least one file=/absolute/path")
    if len(files) > MAX_FILES:
        raise ValidationError("file", f"at most {MAX_FILES} files")
    allow = _path_allowlist(request)
    if allow is not None and not allow:
        raise ValidationError("path allowlist", "this token may read no files (paths: [])")
    paths = [validate_path(f, f"file[{i}]", allow) for i, f in enumerate(files)]
    follow = validate_flag(_one(request, "follow"), "follow", True)
    return limit, paths, follow


async def tail_in_guest(request: web.Request) -> web.StreamResponse:
    guest, runner = _exec_target(request, "tail")
    detail: dict[str, Any] = {"node": guest.node}
    try:
        limit, paths, follow = _tail_params(request)
        if follow and guest.type == "qemu":
            raise ValidationError(
                "follow",
                "QEMU guests run tail through the guest agent, which cannot stream: use follow=0",
            )
    except ValidationError as exc:
        raise _rejected(request, "tail", guest.ref, detail, exc) from None
    argv = tail_argv(limit, paths, follow)
    detail["argv"] = argv
    _require_running(guest)
    if guest.type == "qemu":
        detail["via"] = "agent"
        run = _via_agent(runner, guest, argv)
    else:
        _require_shell(runner, guest.cluster)
        detail["via"] = "shell"
        timeout_s = None if follow else runner.settings.snapshot_timeout_s
        run = _via_shell(
            runner, guest.cluster, guest.node, in_container(guest.vmid, argv), timeout_s
        )

    return await _stream(
        request, "text", action="tail", target=guest.ref, detail=detail, run=run,
        always_status=False, early_headers=follow,
    )  # fmt: skip


async def tail_on_node(request: web.Request) -> web.StreamResponse:
    require(request, "exec", "tail")
    node = _node(request)
    principal = request[PRINCIPAL]
    target = f"{node.cluster}:node/{node.name}"
    detail: dict[str, Any] = {"node": node.name}
    # A node shell reads the hypervisor itself: only tokens allowed on every guest may.
    if not principal.allowlist.all:
        message = (
            f"token {principal.name!r} is limited to some guests; node tail needs guests: ['*']"
        )
        _audit(request, "tail", target, detail, f"denied: {message}")
        raise ApiError(403, "Forbidden", message)
    runner = _runner(request)
    try:
        limit, paths, follow = _tail_params(request)
    except ValidationError as exc:
        raise _rejected(request, "tail", target, detail, exc) from None
    argv = tail_argv(limit, paths, follow)
    detail["argv"] = argv
    detail["via"] = "shell"
    _require_shell(runner, node.cluster)
    timeout_s = None if follow else runner.settings.snapshot_timeout_s
    run = _via_shell(runner, node.cluster, node.name, argv, timeout_s)
    return await _stream(
        request,
        "text",
        action="tail",
        target=target,
        detail=detail,
        run=run,
        always_status=False,
        early_headers=follow,
    )


def _node_target(node: Node) -> str:
    return f"{node.cluster}:node/{node.name}"


def _require_node_exec(request: web.Request) -> None:
    """The node-exec scope, which only tokens that list it have (`exec` and `guests: ['*']`
    are not enough: this is a root shell on the hypervisor). A refusal is audited."""
    principal = request[PRINCIPAL]
    if has_scope(principal, "node-exec"):
        return
    raw = request.match_info["node"]
    # The audit names the node as canonically as it can; the client learns nothing of it.
    found = context(request).inventory.snapshot.node(raw).nodes
    target = _node_target(found[0]) if len(found) == 1 else f"node/{raw}"
    message = f"token {principal.name!r} lacks the 'node-exec' scope"
    _audit(request, "exec", target, {"node": raw}, f"denied: {message}")
    raise ApiError(403, "Forbidden", message)


async def exec_on_node(request: web.Request) -> web.StreamResponse:
    """`POST /exec/{node}` (GoDoxy's NodeCommand): an argv run on the node itself, through the
    same validation, terminal session and audit as exec in a container."""
    _require_node_exec(request)
    node = _node(request)
    target = _node_target(node)
    runner = _runner(request)
    detail: dict[str, Any] = {"node": node.name}
    try:
        fmt, argv, timeout_s = await _exec_body(request, runner, detail)
    except ValidationError as exc:
        raise _rejected(request, "exec", target, detail, exc) from None
    if node.status == "offline":
        raise ApiError(409, "Conflict", f"node {node.cluster}:{node.name} is offline")
    _require_shell(runner, node.cluster)
    detail["via"] = "shell"
    run = _via_shell(runner, node.cluster, node.name, argv, timeout_s)
    return await _stream(
        request, fmt, action="exec", target=target, detail=detail, run=run, always_status=True
    )
