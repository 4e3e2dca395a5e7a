"""idle-watch's `idle.before_stop` commands (wake/before_stop.py) through the exec path of
`POST /exec`: the same validation, the QEMU guest agent's exec for VMs and `pct exec` in the
node's terminal for containers (streams/shell_runner.py), and an audit record like the API's,
under the name `idle-watch`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .api.audit import AuditLog, AuditRecord
from .inventory.model import Guest
from .pve.errors import PveError
from .pve.termproxy import ShellTimeoutError, ShellUnavailableError
from .streams.guest_commands import in_container
from .streams.shell_runner import ShellRunner
from .streams.validation import ValidationError, validate_argv
from .wake.before_stop import CommandError

__all__ = ["AUDIT_NAME", "MAX_OUTPUT_BYTES", "CommandOutput", "IdleCommands"]

# Who the audit log says ran the command (API tokens are named by their `name`).
AUDIT_NAME = "idle-watch"
# What is kept of a command's output: enough for a log line, bounded for a chatty command.
MAX_OUTPUT_BYTES = 4096


class CommandOutput(NamedTuple):
    exit_status: int
    output: str


class _Kept:
    """A sink that keeps the first MAX_OUTPUT_BYTES of the output and drops the rest."""

    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        room = MAX_OUTPUT_BYTES - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class IdleCommands:
    """`wake.before_stop.GuestCommands` over the API's shell runner. `audit` gives the audit
    log once the daemon has opened it (None: not audited)."""

    def __init__(
        self, runner: ShellRunner, audit: Callable[[], AuditLog | None] = lambda: None
    ) -> None:
        self._runner = runner
        self._audit = audit

    async def run(self, guest: Guest, argv: Sequence[str], *, timeout_s: float) -> CommandOutput:
        detail: dict[str, Any] = {"node": guest.node, "argv": list(argv), "by": "idle.before_stop"}
        try:
            checked = validate_argv(list(argv))  # the config checked it; the API checks again
        except ValidationError as exc:
            self._write(guest, detail, f"rejected: {exc.rule}")
            raise CommandError(exc.message) from None
        sink = _Kept()
        started = time.monotonic()
        try:
            status = await self._exec(guest, checked, sink, timeout_s, detail)
        except asyncio.CancelledError:
            self._write(guest, detail, "cancelled", time.monotonic() - started)
            raise
        except PveError as exc:
            result = "timeout" if isinstance(exc, ShellTimeoutError) else f"failed: {exc.message}"
            self._write(guest, detail, result, time.monotonic() - started)
            raise
        self._write(guest, detail, f"exit {status}", time.monotonic() - started)
        return CommandOutput(status, sink.text())

    async def _exec(
        self,
        guest: Guest,
        argv: list[str],
        sink: _Kept,
        timeout_s: float,
        detail: dict[str, Any],
    ) -> int:
        """As `POST /exec` chooses: the guest agent for a VM (argv, no shell), else the node's
        terminal with `pct exec` (each argument quoted by the runner)."""
        runner = self._runner
        if guest.type == "qemu":
            detail["via"] = "agent"
            return await runner.run_agent(
                guest.cluster, guest.node, guest.vmid, argv, sink, timeout_s=timeout_s
            )
        detail["via"] = "shell"
        if not runner.shells_available(guest.cluster):
            raise ShellUnavailableError()
        return await runner.run_shell(
            guest.cluster, guest.node, in_container(guest.vmid, argv), sink, timeout_s=timeout_s
        )

    def _write(
        self, guest: Guest, detail: dict[str, Any], result: str, duration_s: float = 0.0
    ) -> None:
        audit = self._audit()
        if audit is None:
            return
        audit.write(
            AuditRecord(
                token=AUDIT_NAME,
                action="exec",
                guest=guest.ref,
                detail=dict(detail),
                result=result,
                duration_s=round(duration_s, 3),
            )
        )
