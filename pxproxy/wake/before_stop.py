"""`idle.before_stop`: a command run in the guest when its idle deadline passes (players told
the server stops), then a grace period, then the idle stop.

Transport-free like the rest of wake/: the command goes through `GuestCommands`, which the
composition root implements over the exec path of `POST /exec` (pxproxy/idle_commands.py).
A `BeforeStopRun` holds one attempt: the command's task, then the time the stop is due. The
waker drives it from its idle checks, so the grace follows the waker's clock (a fake one in
tests) and needs no task of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..config.models import BeforeStop
from ..inventory.model import Guest
from ..pve.errors import PveError
from .news import WakeNews
from .stats import WakeStats

log = logging.getLogger(__name__)

# On top of the command's own timeout: the exec path may queue for a shell slot first, and
# its own bound may be looser; this one is what idle-watch promises.
COMMAND_MARGIN_S = 15.0
# How much of the command's output goes to the log line.
LOGGED_OUTPUT_CHARS = 200


class CommandError(Exception):
    """The command could not be run (refused, or no way into the guest): `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CommandResult(Protocol):
    @property
    def exit_status(self) -> int: ...

    @property
    def output(self) -> str:
        """stdout and stderr, as much of them as the implementation keeps."""


class GuestCommands(Protocol):
    """Runs an argv in a running guest and returns once it has exited. Raises CommandError or
    PveError when it could not run: refused, no guest agent, no shell ticket, a timeout."""

    async def run(
        self, guest: Guest, argv: Sequence[str], *, timeout_s: float
    ) -> CommandResult: ...


@dataclass(frozen=True, slots=True)
class BeforeStopProgress:
    """What `/api/v1/routes` shows while a before_stop runs: its step, and in the grace,
    the seconds until the stop."""

    step: Literal["command", "grace"]
    stopping_in_s: float | None

    def to_json(self) -> dict[str, object]:
        left = None if self.stopping_in_s is None else round(self.stopping_in_s, 1)
        return {"step": self.step, "stopping_in_s": left}


def brief(output: str) -> str:
    """The output on one line, cut for the log."""
    text = " ".join(output.split())
    return text if len(text) <= LOGGED_OUTPUT_CHARS else text[: LOGGED_OUTPUT_CHARS - 1] + "…"


class BeforeStopRun:
    """One before_stop of a guest: the command (a task the waker owns), then the grace.

    `activity_mark` is the waker's last activity when the idle deadline passed: any activity
    after it abandons the stop (the waker decides). `stop_at` is None while the command runs,
    then the time the stop is due: the grace counts from the command's end, whatever its
    outcome."""

    def __init__(
        self,
        ref: str,
        guest: Guest | str,
        settings: BeforeStop,
        commands: GuestCommands | None,
        *,
        activity_mark: float,
        clock: Callable[[], float] = time.monotonic,
        stats: WakeStats,
        fields: dict[str, object],
        news: WakeNews | None = None,
    ) -> None:
        self.ref = ref
        self._news = news or WakeNews()
        self.settings = settings
        self.activity_mark = activity_mark
        self._clock = clock
        self._stats = stats
        self._fields = fields
        self.stop_at: float | None = None
        self.task = asyncio.create_task(self._command(guest, commands), name=f"before-stop:{ref}")

    def progress(self) -> BeforeStopProgress:
        if self.stop_at is None:
            return BeforeStopProgress("command", None)
        return BeforeStopProgress("grace", max(0.0, self.stop_at - self._clock()))

    def due(self) -> bool:
        return self.stop_at is not None and self._clock() >= self.stop_at

    async def _command(self, guest: Guest | str, commands: GuestCommands | None) -> None:
        argv = list(self.settings.exec)
        started = self._clock()
        self._stats.before_stop_started(self.ref)
        outcome = await self._run(guest, commands, argv)
        self.stop_at = self._clock() + self.settings.grace
        seconds = round(self._clock() - started, 3)
        grace = self.settings.grace
        if isinstance(outcome, str):
            self._stats.before_stop_failed(self.ref)
            self._news.idle_event(self.ref, "before_stop", f"failed: {outcome}")
            log.warning(
                "idle-watch: before_stop of %s failed: %s; stopping in %gs all the same",
                self.ref,
                outcome,
                grace,
                extra={**self._fields, "argv": argv, "error": outcome, "duration_s": seconds},
            )
            return
        status, output = outcome.exit_status, brief(outcome.output)
        fields = {**self._fields, "argv": argv, "exit_status": status, "duration_s": seconds}
        # The exit status only: the output stays in the log, as the audit trail keeps
        # commands from tokens without exec (a read token reads the event stream).
        self._news.idle_event(self.ref, "before_stop", f"exit {status}")
        if status != 0:
            self._stats.before_stop_failed(self.ref)
            log.warning(
                "idle-watch: before_stop of %s exited %d: %s; stopping in %gs all the same",
                self.ref,
                status,
                output or "(no output)",
                grace,
                extra={**fields, "output": output},
            )
            return
        log.info(
            "idle-watch: before_stop of %s ran (exit 0): %s; stopping in %gs unless it is used",
            self.ref,
            output or "(no output)",
            grace,
            extra={**fields, "output": output},
        )

    async def _run(
        self, guest: Guest | str, commands: GuestCommands | None, argv: list[str]
    ) -> CommandResult | str:
        """The command's result, or why it could not run."""
        if isinstance(guest, str):
            return guest
        if commands is None:
            return "no exec path is set up for idle-watch"
        if guest.status != "running":
            return f"the guest is {guest.status}, not running"
        limit_s = self.settings.timeout + COMMAND_MARGIN_S
        try:
            async with asyncio.timeout(limit_s):
                return await commands.run(guest, argv, timeout_s=self.settings.timeout)
        except TimeoutError:
            return f"no answer within {limit_s:g}s"
        except (CommandError, PveError) as exc:
            return exc.message
        except Exception as exc:  # a bug in the exec path must not cancel the idle stop
            log.exception("idle-watch: before_stop of %s crashed", self.ref)
            return f"internal error: {exc!r}"
