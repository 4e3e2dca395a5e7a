"""One guest's idle-watch state machine: asleep → waking → ready → stopping → asleep (or failed).

Transport-free: it talks to Proxmox through PowerControl, to the service through a Probe, and
reads the inventory's snapshots. It implements `contract.Gate` for the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from ..config.models import BeforeStop, IdleConfig
from ..inventory.model import Guest
from ..inventory.snapshot import Snapshot
from ..pve.errors import PveError
from ..state.store import Circuit, SavedState, Sleep, guest_key
from .before_stop import BeforeStopProgress, BeforeStopRun, GuestCommands
from .contract import WakeError, WakeProgress, WakeState, WakeTimeout
from .news import WakeNews
from .power import PowerControl, PowerError, PowerOutcomeUnknown, guest_label, power_error
from .readiness import Probe
from .stats import WakeObserver, WakeStats

log = logging.getLogger(__name__)

# Readiness is polled this often; a short interval keeps the wake-to-first-byte overhead low.
PROBE_INTERVAL_S = 0.05
# After a power action of ours the inventory may lag (pvestatd refreshes about every 10 s):
# snapshots that contradict what we did are ignored until they agree or this long has passed.
SYNC_GRACE_S = 30.0
# A ref that resolves to no guest: requests are refused at once and told to retry this soon.
MISSING_RETRY_S = 5.0
# What waiters hear when Proxmox went away mid-wake; the detail (address, error) goes to the log.
OUTCOME_UNKNOWN = "Proxmox stopped answering during the wake; the next poll tells whether it worked"
# What waiters hear when the wake was cancelled under them (the daemon is stopping).
ABANDONED = "the wake was abandoned: pxproxy is stopping"
# A wake past wake_timeout whose start was sent goes on in Proxmox: it is watched this long
# (the power task's own bound), probing this many times less often than a wake does.
LATE_WATCH_S = 300.0
LATE_PROBE_FACTOR = 20

# How we put the guest to sleep, which decides how to wake it: resume or start.
Slept = Literal["stopped", "paused", "suspended", "hibernated"]
PowerOn = Literal["start", "resume"]

_AWAKE = (WakeState.WAKING, WakeState.READY, WakeState.STOPPING)

# What the power API's actions make of the guest: how it sleeps after them.
_API_SLEEPS = ("stop", "shutdown", "suspend")


class _MergedAway(Exception):
    """This waker's ref turned out to name a guest another waker owns (a route by name and
    one by vmid): the wake goes on in that waker."""


class SnapshotSource(Protocol):
    """What the waker reads from the inventory (`inventory.store.Inventory` fits)."""

    @property
    def snapshot(self) -> Snapshot: ...

    async def wait_until(
        self, predicate: Callable[[Snapshot], bool], timeout_s: float
    ) -> Snapshot: ...


@dataclass(frozen=True, slots=True)
class _Failure:
    """The outcome of a failed wake; every waiter gets its own exception built from it."""

    timeout: bool
    message: str

    def error(self, guest: str, retry_after_s: float) -> WakeError:
        kind = WakeTimeout if self.timeout else WakeError
        return kind(guest, self.message, retry_after_s)


# The outcome of a wake handed over to the waker that owns the guest (`_MergedAway`).
_MERGED = _Failure(False, "merged into the guest's own waker")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def resolve_guest(snapshot: Snapshot, ref: str) -> Guest | str:
    """The one guest a ref names, or why there is none."""
    found = snapshot.lookup_ref(ref).guests
    if len(found) == 1:
        return found[0]
    if not found:
        return f"guest {ref!r} not found in the inventory"
    names = ", ".join(g.ref for g in found)
    return f"guest ref {ref!r} is ambiguous: {names}; use cluster:vmid"


class Waker:
    """The gate of one guest. Several routes to the guest share it.

    `idle` None: a dependency without idle settings of its own; woken on demand, never stopped.
    `probe`/`port` None: ready as soon as the power task succeeded and the guest has an address.
    """

    def __init__(
        self,
        ref: str,
        *,
        inventory: SnapshotSource,
        power: PowerControl,
        idle: IdleConfig | None,
        port: int | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        stats: WakeStats | None = None,
        observer: WakeObserver | None = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
        sync_grace_s: float = SYNC_GRACE_S,
        wall: Callable[[], float] = time.time,
        bind: Callable[[Waker], Waker] | None = None,
        commands: GuestCommands | None = None,
        news: WakeNews | None = None,
    ) -> None:
        self.ref = ref
        # Told of every state change and idle outcome (the event stream listens).
        self._news = news or WakeNews()
        # The manager's binding: the waker that owns the guest this ref names now (self, or
        # another waker whose ref names the same guest). None: this waker is alone.
        self._bind = bind
        self._merged: Waker | None = None
        # Clear while the last run's records wait to be applied (the guest not seen yet).
        self._restored = asyncio.Event()
        self._restored.set()
        self._by_api = False  # the running wake was begun by the power API
        self.idle = idle
        self._settings = idle or IdleConfig()
        self._inventory = inventory
        self._power = power
        self._port = port
        self._probe = probe
        self._clock = clock
        self._stats = stats or WakeStats()
        self._observer = observer
        self._probe_interval_s = probe_interval_s
        self._sync_grace_s = sync_grace_s
        self.dependencies: list[Waker] = []
        self.dependents: list[Waker] = []

        self._progress = WakeProgress(WakeState.ASLEEP, "asleep")
        self._subscribers: set[asyncio.Queue[WakeProgress]] = set()
        self._wake_task: asyncio.Task[_Failure | None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._failure: _Failure | None = None
        self._circuit_until = float("-inf")
        self._missing: str | None = None
        self._slept: Slept | None = None
        # What the snapshot should show after our last action, and until when we wait for it.
        self._expected: Literal["running", "stopped"] | None = None
        self._sync_deadline = float("-inf")
        # Set when a wake ended without Proxmox telling how (it went away mid-wake): the guest
        # list of the guest's cluster at that moment. The first poll after it decides the state.
        self._unsettled: tuple[Guest, ...] | None = None
        self._holds = 0
        # Idle checks that found the guest held or needed (for /api/v1/routes-style insight and
        # for tests that prove an idle stop did not happen).
        self.busy_checks = 0
        self._last_activity = clock()
        # What survives a restart (pxproxy/state/), in wall-clock time, under the guest's key.
        self._wall = wall
        self._key: str | None = None
        self._slept_at = 0.0
        self._circuit_until_wall = 0.0
        self._saved: SavedState | None = None  # applied once the guest is first found
        self._saved_paused: bool | None = None
        self._saved_activity: float | None = None
        # Names of the routes through this guest, for the log's `route` field (the manager's).
        self.routes: list[str] = []
        self.scheme = "http"  # of the route whose settings this waker has (for its probe)
        self.protocol = "tcp"  # likewise: a UDP route's guest is probed with datagrams
        self._power_sent = False  # the running wake has sent its start or resume
        self._wake_began: float | None = None  # for the loading page's elapsed time
        self._late_task: asyncio.Task[None] | None = None
        # A power action of the API (what the inventory should show, until when): the change
        # is pxproxy's own, not one made outside.
        self._noted: tuple[Literal["running", "stopped"], float] | None = None
        # idle.before_stop: the one under way (command, then grace), and every command task
        # still running, also of one abandoned meanwhile (closed with the waker).
        self._commands = commands
        self._before: BeforeStopRun | None = None
        self._command_tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ Gate

    @property
    def state(self) -> WakeState:
        if self._merged is not None:
            return self._merged.state
        return self._progress.state

    @property
    def wake_timeout_s(self) -> float:
        return self._settings.wake_timeout

    @property
    def error(self) -> str | None:
        """The last failure's message while the state is failed."""
        return self._progress.error

    @property
    def wake_elapsed_s(self) -> float | None:
        """Seconds since the running wake began; None when no wake is running."""
        if self._merged is not None:
            return self._merged.wake_elapsed_s
        if self.state is not WakeState.WAKING or self._wake_began is None:
            return None
        return max(0.0, self._clock() - self._wake_began)

    @property
    def awake(self) -> bool:
        return self.state in _AWAKE

    async def ready(self, *, wake: bool = True) -> None:
        if self._merged is not None:
            return await self._merged.ready(wake=wake)
        if self.state is WakeState.READY:
            if wake:
                self.activity()
            return
        task = self._wake_task
        if task is None or task.done():
            if not wake:
                raise self._not_ready_error()
            self._refuse_if_broken()
            task = self._begin_wake()
        # Shielded: a waiter that gives up (client gone) must not cancel everybody's wake.
        try:
            failure = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled() and not _cancelling():
                # The wake was abandoned (close), not this waiter: an answer, not a cancellation.
                raise WakeError(self.ref, ABANDONED, self._settings.retry_after) from None
            raise
        if failure is _MERGED and self._merged is not None:
            return await self._merged.ready(wake=wake)
        if failure is not None:
            raise failure.error(self.ref, self._settings.retry_after)
        if wake:
            self.activity()

    def activity(self) -> None:
        if self._merged is not None:
            self._merged.activity()
            return
        self._last_activity = self._clock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self._merged is not None:
            with self._merged.hold():
                yield
            return
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            # The idle clock starts when the last byte of the connection went through.
            self.activity()

    async def progress(self) -> AsyncIterator[WakeProgress]:
        if self._merged is not None:
            async for item in self._merged.progress():
                yield item
            return
        queue: asyncio.Queue[WakeProgress] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            item = self._progress
            while True:
                yield item
                if item.state in (WakeState.READY, WakeState.FAILED):
                    return
                item = await queue.get()
        finally:
            self._subscribers.discard(queue)

    # ---------------------------------------------------------- driven by the manager

    def observe(self, snapshot: Snapshot) -> None:
        """Follow a new snapshot: the guest appearing, vanishing, or powered by someone else."""
        if not snapshot.clusters:
            return  # no poll has finished yet: nothing is known
        found = resolve_guest(snapshot, self.ref)
        if not isinstance(found, str) and not self._restored.is_set():
            return  # found: the last run's records come first (the manager's next round)
        if not isinstance(found, str):
            self._found(found)
        if self._busy():
            return  # our own task decides the state; it reads the snapshot itself
        if isinstance(found, str):
            self._unsettled = None  # whatever the last wake did, there is no guest to follow now
            if self._missing != found:
                log.warning("idle-watch: %s", found)
                self._missing = found
                self._set(WakeState.FAILED, found, error=found)
            return
        if self._unsettled is not None:
            self._settle(snapshot, found)
            return
        if self._missing is not None:
            self._missing = None
            self._follow(found, initial=True)
            return
        self._follow(found, initial=False)

    def check_idle(self) -> None:
        """Stop the guest when it sat idle long enough, after its before_stop (command, then
        grace) if it has one; called about once a second."""
        if self.idle is None or self.state is not WakeState.READY:
            self._before = None  # no longer ours to stop (retired, stopped, waking)
            return
        now = self._clock()
        if self._holds > 0 or any(d.awake for d in self.dependents):
            # Busy, or needed by an awake dependent: the idle clock starts once that ends.
            self._last_activity = now
            self.busy_checks += 1
            self._abandon_before_stop("a connection is open")
            return
        before = self._before
        if before is not None:
            if self._last_activity != before.activity_mark:
                self._abandon_before_stop("it was used")
            elif before.due():
                self._before = None
                self._begin_stop()
            return
        if now - self._last_activity >= self.idle.timeout:
            if self.idle.before_stop is None:
                self._begin_stop()
            else:
                self._begin_before_stop(self.idle.before_stop)

    @property
    def before_stop(self) -> BeforeStopProgress | None:
        """The before_stop under way (its command, or the grace left), if any."""
        if self._merged is not None:
            return self._merged.before_stop
        if self._before is None or self.state is not WakeState.READY:
            return None
        return self._before.progress()

    def note_power_action(self, action: str) -> None:
        """The power API ran `action` on this guest: the change the inventory shows next is
        pxproxy's own, and it is believed at once (our record of how the guest slept is void)."""
        shows: Literal["running", "stopped"] = (
            "running" if action in ("start", "resume", "reboot") else "stopped"
        )
        self._noted = (shows, self._clock() + self._sync_grace_s)
        if self._before is not None:
            # The operator acts on the guest: no stop of ours now; idle again from here.
            self._last_activity = self._clock()
            self._abandon_before_stop(f"{action} through pxproxy's power API")
        self._expected = None
        self._sync_deadline = float("-inf")
        if action in ("start", "resume", "stop", "shutdown"):
            self._slept = None

    # ------------------------------------------------------------ the power API

    def wake_for_api(self) -> asyncio.Task[_Failure | None] | None:
        """A start or resume through the power API: the wake in flight, or a new one (an
        operator's explicit start is not held back by the circuit). None: already ready."""
        if self.state is WakeState.READY:
            return None
        task = self._wake_task
        if task is None or task.done():
            self._failure = None
            self._circuit_until = float("-inf")
            task = self._begin_wake()
            self._by_api = True
        return task

    def slept_by_api(self, action: str, guest: Guest) -> None:
        """The power API sent stop, shutdown or suspend: how the guest sleeps now, so the next
        request wakes it the right way (a VM suspended through the API is resumed)."""
        slept: Slept = "stopped"
        if action == "suspend":
            slept = "paused" if guest.type == "qemu" else "suspended"
        self._slept = slept
        self._slept_at = self._wall()
        self._failure = None
        self._circuit_until = float("-inf")
        self._noted = None
        self._expect("running" if slept == "paused" else "stopped")
        log.info(
            "idle-watch: %s %s through pxproxy's power API, now %s",
            self.ref,
            action,
            slept,
            extra=self._fields(action=action, slept=slept),
        )
        if not self._busy():
            self._set(WakeState.ASLEEP, slept)

    # ------------------------------------------------------------ shared guests

    def merge_into(self, owner: Waker) -> None:
        """This waker's ref names `owner`'s guest: every caller is handed over to `owner`,
        which takes this waker's routes (and idle settings, when it had none of its own)."""
        self._merged = owner
        owner.routes.extend(r for r in self.routes if r not in owner.routes)
        if owner.idle is None and self.idle is not None:
            owner.idle, owner._settings = self.idle, self._settings
            owner._port, owner._probe, self._probe = self._port, self._probe, None

    @property
    def merged(self) -> Waker | None:
        return self._merged

    # ------------------------------------------------------------ route changes

    @property
    def port(self) -> int | None:
        return self._port

    def reconfigure(
        self, idle: IdleConfig, port: int, scheme: str, probe: Probe | None
    ) -> Probe | None:
        """New idle settings from a reload or a guest's notes. A wake or stop in flight
        goes on as it began; the next decision uses these. Returns the probe replaced (the
        caller closes it)."""
        old = self._probe
        self.idle, self._settings = idle, idle
        self._port, self._probe, self.scheme = port, probe, scheme
        return old

    def retire(self) -> None:
        """No route leads here any more: never stop the guest again (a wake in flight ends
        for its waiters as it would have)."""
        self.idle = None

    @property
    def held(self) -> bool:
        """An open connection or stream holds the guest busy."""
        return self._holds > 0

    @property
    def guest_key(self) -> str | None:
        """`cluster:id` of the guest this waker has found (None: not found yet)."""
        return self._key

    @property
    def in_flight(self) -> bool:
        return any(t is not None and not t.done() for t in (self._wake_task, self._stop_task))

    # ------------------------------------------------------------ across restarts

    def restore_pending(self) -> None:
        """The last run's records come once the guest is found (`restore`): until then the
        snapshot is not followed and a wake waits for them."""
        self._restored.clear()

    @property
    def restoring(self) -> bool:
        return not self._restored.is_set()

    def restore(
        self, saved: SavedState, *, paused: bool | None = None, activity_at: float | None = None
    ) -> None:
        """Before the first snapshot is followed: what the last run left (how we put the guest
        to sleep, an open circuit, the last activity), applied when the guest is found.
        `paused`: what status/current said of a running VM (None: not asked)."""
        self._saved, self._saved_paused, self._saved_activity = saved, paused, activity_at
        self._restored.set()

    def persisted(self) -> tuple[str, Sleep | None, Circuit | None] | None:
        """(guest key, how it sleeps, open circuit) to save; None before the guest was found."""
        if self._key is None:
            return None
        sleep = Sleep(self._slept, self._slept_at) if self._slept is not None else None
        circuit = None
        # An unsettled failure (outcome unknown) is closed by the next poll: not worth keeping.
        if (
            self._failure is not None
            and self._unsettled is None
            and self._circuit_until > self._clock()
        ):
            failure = self._failure
            circuit = Circuit(failure.message, failure.timeout, self._circuit_until_wall)
        return self._key, sleep, circuit

    def last_activity_at(self) -> float:
        """The last activity in wall-clock time."""
        return self._wall() - (self._clock() - self._last_activity)

    def _found(self, guest: Guest) -> None:
        self._key = guest_key(guest.cluster, guest.id)
        if self._saved is not None:
            self._apply_saved(guest, self._saved)

    def _apply_saved(self, guest: Guest, saved: SavedState) -> None:
        assert self._key is not None
        self._saved = None
        now = self._wall()
        sleep = saved.sleeps.get(self._key)
        slept = sleep.how if sleep is not None else None
        running = guest.status == "running"
        if self._saved_paused is not None and guest.type == "qemu" and running:
            # status/current tells what /cluster/resources cannot: paused or running.
            slept = "paused" if self._saved_paused else None
        elif running and slept != "paused":
            slept = None  # started while pxproxy was away
        self._slept = slept
        self._slept_at = sleep.at if sleep is not None and sleep.how == slept else now
        if not running or slept is not None:
            self._saved_activity = None  # its idle clock starts when it is next awake
        circuit = saved.circuits.get(self._key)
        if circuit is not None and circuit.until > now:
            self._failure = _Failure(circuit.timeout, circuit.message)
            self._circuit_until = self._clock() + (circuit.until - now)
            self._circuit_until_wall = circuit.until
            self._set(WakeState.FAILED, circuit.message, error=circuit.message)
            log.info(
                "idle-watch: %s restored: circuit open for %.0fs more: %s",
                self.ref,
                circuit.until - now,
                circuit.message,
            )
        elif slept is not None:
            self._set(WakeState.ASLEEP, slept)
            log.info("idle-watch: %s restored: asleep (%s)", self.ref, slept)

    def _idle_since(self, guest: Guest) -> float:
        """When the idle clock of a guest found running starts: now, or after a restart the
        last saved activity (never before the guest's own start)."""
        now = self._clock()
        saved, self._saved_activity = self._saved_activity, None
        if saved is None:
            return now
        wall = self._wall()
        idle_s = wall - max(saved, wall - guest.uptime)
        return now - max(0.0, idle_s)

    async def close(self) -> None:
        """Cancel and await what this waker runs; release its probe."""
        self._restored.set()
        self._before = None
        tasks = (self._wake_task, self._stop_task, self._late_task, *self._command_tasks)
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._probe is not None:
            await self._probe.close()

    # ------------------------------------------------------------------ internals

    def _fields(self, **more: object) -> dict[str, object]:
        """The structured fields of a log line about this guest (`extra=`)."""
        return {"guest": self.ref, "route": ",".join(self.routes) or None, **more}

    def _busy(self) -> bool:
        return any(t is not None and not t.done() for t in (self._wake_task, self._stop_task))

    def _set(self, state: WakeState, step: str, *, error: str | None = None) -> None:
        progress = WakeProgress(state, step, error)
        if progress == self._progress:
            return  # followers see changes only
        self._progress = progress
        for queue in self._subscribers:
            queue.put_nowait(self._progress)
        self._news.wake_changed(self.ref, self.routes, progress)

    def _not_ready_error(self) -> WakeError:
        if self.state is WakeState.FAILED and self._progress.error:
            return WakeError(self.ref, self._progress.error, self._settings.retry_after)
        return WakeError(
            self.ref, f"{self.state.value}; not woken for this request", self._settings.retry_after
        )

    def _refuse_if_broken(self) -> None:
        """An open circuit or an unknown guest: refuse at once, no restart storm."""
        if self._missing is not None and self._inventory.snapshot.clusters:
            raise WakeError(self.ref, self._missing, MISSING_RETRY_S)
        remaining = self._circuit_until - self._clock()
        if self._failure is not None and remaining > 0:
            raise self._failure.error(self.ref, remaining)

    def _begin_wake(self, *, settling: bool = False) -> asyncio.Task[_Failure | None]:
        """A wake; `settling`: the rest of one whose outcome Proxmox never told (the guest
        shows running): checked like any wake, but not counted as another one."""
        stopping = self._stop_task is not None and not self._stop_task.done()
        if settling:
            step = "checking that it serves"
        else:
            step = "waiting for the guest to stop" if stopping else "starting"
            self._by_api = False
            self._stats.wake_started(self.ref)
            log.info("idle-watch: waking %s", self.ref, extra=self._fields())
            self._wake_began = self._clock()
        self._set(WakeState.WAKING, step)
        self._wake_task = asyncio.create_task(self._wake(settling), name=f"wake:{self.ref}")
        return self._wake_task

    async def _wake(self, settling: bool) -> _Failure | None:
        started = self._clock()
        unknown = False
        self._power_sent = False
        try:
            async with asyncio.timeout(self._settings.wake_timeout):
                await self._wake_steps()
        except asyncio.CancelledError:
            self._abandoned()
            raise
        except _MergedAway:
            self._set(WakeState.ASLEEP, "asleep")
            return _MERGED
        except TimeoutError:
            failure = _Failure(True, f"not ready after {self._settings.wake_timeout:g}s")
        except PowerOutcomeUnknown as exc:
            log.warning(
                "idle-watch: Proxmox stopped answering while waking %s (%s); "
                "the next poll decides whether it started",
                self.ref,
                exc,
            )
            failure = _Failure(False, OUTCOME_UNKNOWN)
            unknown = True
        except PowerError as exc:
            failure = _Failure(False, exc.message)
        except WakeError as exc:
            failure = _Failure(False, exc.message)
        except Exception as exc:  # a bug must fail this wake, not leave it "waking" forever
            log.exception("idle-watch: waking %s crashed", self.ref)
            failure = _Failure(False, f"internal error: {exc}")
        else:
            self._failure = None
            self._unsettled = None
            self._last_activity = self._clock()
            self._set(WakeState.READY, "ready")
            seconds = self._clock() - started
            if self._by_api:
                log.info(
                    "idle-watch: %s is running (started through pxproxy's power API)",
                    self.ref,
                    extra=self._fields(duration_s=round(seconds, 3), outside=False),
                )
            else:
                log.info(
                    "idle-watch: %s ready after %.2fs",
                    self.ref,
                    seconds,
                    extra=self._fields(duration_s=round(seconds, 3)),
                )
            if settling:
                self._stats.wake_settled(self.ref)
            else:
                self._finished(started, ok=True)
            return None
        seconds = self._clock() - started
        log.warning(
            "idle-watch: waking %s failed after %.2fs: %s",
            self.ref,
            seconds,
            failure.message,
            extra=self._fields(duration_s=round(seconds, 3), error=failure.message),
        )
        self._failure = failure
        if failure.timeout and self._power_sent:
            self._watch_late(started, failure)
        # Open the circuit even when the outcome is unknown: Proxmox is likely down, and a
        # request storm must not become a start storm. The next poll closes it (`_settle`).
        self._circuit_until = self._clock() + self._settings.retry_after
        self._circuit_until_wall = self._wall() + self._settings.retry_after
        if unknown:
            self._unsettle()
        else:
            self._unsettled = None
        self._set(WakeState.FAILED, failure.message, error=failure.message)
        if not settling:
            self._finished(started, ok=False)
        return failure

    def _unsettle(self) -> None:
        """Our last power action may or may not have happened: no record of it may make
        `_follow` disbelieve the inventory, and the next poll's view is taken as the truth."""
        self._expected = None
        self._sync_deadline = float("-inf")
        snapshot = self._inventory.snapshot
        found = resolve_guest(snapshot, self.ref)
        cluster = None if isinstance(found, str) else snapshot.clusters.get(found.cluster)
        self._unsettled = cluster.guests if cluster is not None else ()

    def _abandoned(self) -> None:
        """The wake was cancelled (close): leave nothing half-recorded, end the followers."""
        self._unsettle()
        self._set(WakeState.FAILED, ABANDONED, error=ABANDONED)

    def _settle(self, snapshot: Snapshot, guest: Guest) -> None:
        """After a wake Proxmox never told the end of: the first newer poll says what happened.
        Running: check it serves (the route's readiness check), then ready. Otherwise asleep,
        with the circuit closed, so that the next request wakes it again."""
        cluster = snapshot.clusters.get(guest.cluster)
        if cluster is None or not cluster.ok or cluster.guests is self._unsettled:
            return  # no poll has succeeded since: Proxmox may still be away
        self._unsettled = None
        self._failure = None
        self._circuit_until = float("-inf")
        if guest.status == "running":
            if self._slept != "paused":  # a VM we paused shows running either way
                self._slept = None
            log.info("idle-watch: %s is running after all; checking that it serves", self.ref)
            self._begin_wake(settling=True)
            return
        log.info("idle-watch: %s is %s; the next request wakes it", self.ref, guest.status)
        self._set(WakeState.ASLEEP, "asleep")

    def _watch_late(self, started: float, failure: _Failure) -> None:
        self._late_task = asyncio.create_task(
            self._late_ready(started, failure, asyncio.current_task()), name=f"late:{self.ref}"
        )

    async def _late_ready(
        self, started: float, failure: _Failure, wake: asyncio.Task[object] | None
    ) -> None:
        """A wake past wake_timeout: its start goes on in Proxmox. When the guest serves, it
        is our own start that finished late: ready, not "started outside pxproxy". A new
        wake (the circuit closed) or another outcome ends the watch."""

        def ours() -> bool:
            return self._failure is failure and self._wake_task is wake and not self._busy()

        interval = self._probe_interval_s * LATE_PROBE_FACTOR
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LATE_WATCH_S):
                while ours():
                    if await self._serving():
                        break
                    await asyncio.sleep(interval)
        if not ours() or self.state is not WakeState.FAILED:
            return
        self._failure = None
        self._circuit_until = float("-inf")
        self._slept = None
        self._expect("running")
        self._last_activity = self._clock()
        seconds = self._clock() - started
        log.info(
            "idle-watch: %s ready after %.2fs, past its wake_timeout of %gs",
            self.ref,
            seconds,
            self._settings.wake_timeout,
            extra=self._fields(duration_s=round(seconds, 3), late=True),
        )
        self._set(WakeState.READY, "ready")

    async def _serving(self) -> bool:
        found = resolve_guest(self._inventory.snapshot, self.ref)
        if isinstance(found, str) or found.status != "running" or not found.ips:
            return False
        if self._probe is None or self._port is None:
            return True
        return await self._probe.check(found.ips[0], self._port)

    def _finished(self, started: float, *, ok: bool) -> None:
        seconds = self._clock() - started
        self._stats.wake_finished(self.ref, seconds, ok)
        if self._observer is not None:
            self._observer.wake_finished(self.ref, seconds, ok)

    async def _wake_steps(self) -> None:
        stop_task = self._stop_task
        if stop_task is not None and not stop_task.done():
            await asyncio.wait([stop_task])
        for dep in self.dependencies:
            self._set(WakeState.WAKING, f"waking {dep.ref}")
            try:
                await dep.ready()
            except WakeError as exc:
                message = f"dependency {dep.ref}: {exc.message}"
                if dep._unsettled is not None:  # so this one is settled by the next poll too
                    raise PowerOutcomeUnknown(self.ref, "wake", message) from exc
                raise WakeError(self.ref, message, 0) from exc
        guest = await self._guest()
        # Begun before the first poll: a circuit the last run left, restored just now, holds.
        remaining = self._circuit_until - self._clock()
        if self._failure is not None and remaining > 0:
            raise self._failure.error(self.ref, remaining)
        action = self._wake_action(guest)
        if action is not None:
            self._set(WakeState.WAKING, "starting")
            self._power_sent = True
            await self._power_on(guest, action)
            self._expect("running")  # our own action: a lagging snapshot is not believed
        self._slept = None
        await self._until_serving()

    async def _guest(self) -> Guest:
        if not self._inventory.snapshot.clusters:
            # Started before the first poll finished: wait for it (within wake_timeout).
            await self._inventory.wait_until(lambda s: bool(s.clusters), self.wake_timeout_s)
        found = resolve_guest(self._inventory.snapshot, self.ref)
        if isinstance(found, str):
            raise WakeError(self.ref, found, MISSING_RETRY_S)
        if self._bind is not None and self._bind(self) is not self:
            raise _MergedAway
        if not self._restored.is_set():
            await self._restored.wait()  # the manager applies them on this snapshot
        self._found(found)
        return found

    def _wake_action(self, guest: Guest) -> PowerOn | None:
        """Our own record of how it went to sleep beats a snapshot that may lag behind."""
        if self._slept in ("paused", "suspended"):
            return "resume"
        if self._slept in ("stopped", "hibernated"):
            return "start"
        if guest.status == "paused":
            return "resume"
        if guest.status == "running":
            return None
        if guest.type == "lxc" and guest.lock == "suspended":
            return "resume"  # a checkpointed container
        return "start"  # stopped, or a hibernated VM (its start restores the RAM)

    async def _power_on(self, guest: Guest, action: PowerOn) -> None:
        # PVE's task status is polled with backoff, which can lag a boot by a whole delay.
        # While waiting, probe the port: when it answers, ask for the task's status at once.
        # Readiness still needs the task to end OK (the address may belong to someone else).
        poke = asyncio.Event()
        watcher = (
            asyncio.create_task(self._poke_when_serving(guest, poke), name=f"poke:{self.ref}")
            if self._probe is not None and self._port is not None and guest.ips
            else None
        )
        try:
            await self._power_call(guest, action, poke)
        except PowerError as exc:
            # The snapshot was stale and someone else started it: that is what we wanted.
            if "already running" not in exc.message:
                raise
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    async def _power_call(self, guest: Guest, action: PowerOn, poke: asyncio.Event) -> None:
        try:
            if action == "resume":
                await self._power.resume(guest, poke=poke)
            else:
                await self._power.start(guest, poke=poke)
        except PveError as exc:  # a PowerControl that let Proxmox's own error through
            raise power_error(guest_label(guest), action, exc) from exc

    async def _poke_when_serving(self, guest: Guest, poke: asyncio.Event) -> None:
        assert self._probe is not None
        assert self._port is not None
        while True:
            if await self._probe.check(guest.ips[0], self._port):
                poke.set()
                return
            await asyncio.sleep(self._probe_interval_s)

    async def _until_serving(self) -> None:
        """An address in the snapshot (DHCP may need a poll), then the probe passing."""
        while True:
            found = resolve_guest(self._inventory.snapshot, self.ref)
            if isinstance(found, str):
                raise WakeError(self.ref, found, MISSING_RETRY_S)
            if not found.ips:
                self._set(WakeState.WAKING, "waiting for an address")
                await self._inventory.wait_until(self._has_address, self.wake_timeout_s)
                continue
            if self._probe is None or self._port is None:
                return
            self._set(WakeState.WAKING, "waiting for the port")
            if await self._probe.check(found.ips[0], self._port):
                return
            await asyncio.sleep(self._probe_interval_s)

    def _has_address(self, snapshot: Snapshot) -> bool:
        found = resolve_guest(snapshot, self.ref)
        return isinstance(found, str) or bool(found.ips)

    def _begin_before_stop(self, settings: BeforeStop) -> None:
        """The idle deadline passed: run the command now; the stop comes `grace` after it
        ends, unless the guest is used meanwhile (`check_idle`)."""
        assert self.idle is not None
        log.info(
            "idle-watch: %s idle for %gs: running its before_stop, then waiting %gs",
            self.ref,
            self.idle.timeout,
            settings.grace,
            extra=self._fields(idle_s=self.idle.timeout, grace_s=settings.grace),
        )
        run = BeforeStopRun(
            self.ref,
            resolve_guest(self._inventory.snapshot, self.ref),
            settings,
            self._commands,
            activity_mark=self._last_activity,
            clock=self._clock,
            stats=self._stats,
            fields=self._fields(),
            news=self._news,
        )
        self._before = run
        self._command_tasks.add(run.task)
        run.task.add_done_callback(self._command_tasks.discard)

    def _abandon_before_stop(self, why: str) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        self._stats.before_stop_abandoned(self.ref)
        self._news.idle_event(self.ref, "before_stop_abandoned", why)
        log.info(
            "idle-watch: %s is in use again during its before_stop (%s): not stopped",
            self.ref,
            why,
            extra=self._fields(reason=why),
        )

    def _begin_stop(self) -> None:
        self._set(WakeState.STOPPING, "stopping")
        self._stop_task = asyncio.create_task(self._stop(), name=f"idle-stop:{self.ref}")

    async def _stop(self) -> None:
        # Read once: a reload may change (or a retirement drop) the settings meanwhile.
        idle = self.idle
        assert idle is not None  # only guests with idle settings are stopped
        method = idle.stop_method
        try:
            guest = await self._guest()
            slept = await self._power_off(guest, idle)
        except Exception as exc:  # PowerError, WakeError, or a bug: the guest stays up
            message = exc.message if isinstance(exc, PowerError | WakeError) else repr(exc)
            log.warning(
                "idle-watch: %s of %s failed: %s",
                method,
                self.ref,
                message,
                extra=self._fields(method=method, error=message),
            )
            self._stats.idle_stop_failed(self.ref)
            self._news.idle_event(self.ref, "idle_stop_failed", f"{method}: {message}")
            self._last_activity = self._clock()  # try again after another idle period
            if not self._wake_pending():
                self._set(WakeState.READY, "ready")
            return
        log.info(
            "idle-watch: %s idle for %gs: %s, now %s",
            self.ref,
            idle.timeout,
            method,
            slept,
            extra=self._fields(method=method, idle_s=idle.timeout, slept=slept),
        )
        self._slept = slept
        self._slept_at = self._wall()
        self._expect("running" if slept == "paused" else "stopped")
        self._stats.idle_stopped(self.ref)
        self._news.idle_event(self.ref, "idle_stop", f"{method}, now {slept}")
        if self._observer is not None:
            self._observer.idle_stopped(self.ref)
        if not self._wake_pending():
            self._set(WakeState.ASLEEP, slept)

    def _wake_pending(self) -> bool:
        return self._wake_task is not None and not self._wake_task.done()

    async def _power_off(self, guest: Guest, idle: IdleConfig) -> Slept:
        method = idle.stop_method
        if method == "shutdown":
            await self._power.shutdown(guest, idle.shutdown_timeout)
            return "stopped"
        if method == "stop":
            await self._power.stop(guest)
            return "stopped"
        if method == "hibernate" and guest.type == "qemu":
            await self._power.hibernate(guest)
            return "hibernated"
        # suspend; and hibernate of a container, whose closest equivalent is PVE's (CRIU)
        # suspend: both keep the running state and are undone with resume.
        await self._power.pause(guest)
        return "paused" if guest.type == "qemu" else "suspended"

    def _expect(self, status: Literal["running", "stopped"]) -> None:
        self._expected = status
        self._sync_deadline = self._clock() + self._sync_grace_s

    def _follow(self, guest: Guest, *, initial: bool) -> None:
        running = guest.status == "running"
        if self._expected is not None and not initial:
            if running == (self._expected == "running"):
                self._expected = None  # the inventory caught up with what we did
            elif self._clock() < self._sync_deadline:
                return  # still showing the state from before our action
            else:
                self._expected = None
        if self._slept == "paused" and guest.status == "stopped":
            self._slept = None  # someone stopped the VM we had paused: start it next time
        # A VM we paused still shows "running"; /cluster/resources has no qmpstatus.
        awake = running and self._slept != "paused"
        state = self.state
        # After a wake timeout the guest may well run: not serving is the failure itself.
        timed_out = self._failure is not None and self._failure.timeout
        if awake and (
            initial or state is WakeState.ASLEEP or (state is WakeState.FAILED and not timed_out)
        ):
            self._slept = None
            self._failure = None
            self._last_activity = self._idle_since(guest)  # now, or where a restart left it
            if state is not WakeState.READY:
                self._log_change("running", "started")
            self._set(WakeState.READY, "ready")
        elif not awake and (initial or state is WakeState.READY):
            if state is WakeState.READY:
                self._log_change("stopped", "stopped", guest.status)
                self._slept = None
            self._set(WakeState.ASLEEP, "asleep")

    def _log_change(
        self, shows: Literal["running", "stopped"], verb: str, status: str = ""
    ) -> None:
        """A change the inventory showed: through pxproxy's power API, or made outside."""
        noted, self._noted = self._noted, None
        ours = noted is not None and noted[0] == shows and self._clock() < noted[1]
        by = "through pxproxy's power API" if ours else "outside pxproxy"
        log.info(
            "idle-watch: %s is %s (%s %s)",
            self.ref,
            status or shows,
            verb,
            by,
            extra=self._fields(status=status or shows, outside=not ours),
        )
