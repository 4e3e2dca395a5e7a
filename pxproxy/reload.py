"""Config reload: what a new config changes, and the watch that notices the file changing.

A reload is all or nothing for what it can apply: the new file passes the same validation as
`pxproxy run` (and the depends_on cycle check) before anything changes. What a running daemon
can swap without dropping a connection: routes (and their idle and activity settings), API
tokens and allowlists, guest aliases, the proxy listener's address, TCP route listeners, the
DNS responder, the integration settings, the webhooks, and the pages' theme and template. The
rest (clusters, the API listener, state and audit files, proxy timeouts) is kept as it was,
and the log names each key that needs a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .config.models import Config
from .shutdown import cancel_and_wait

log = logging.getLogger(__name__)

# Top-level keys a reload applies; every other changed key needs a restart.
LIVE_KEYS = frozenset(
    {"routes", "api", "guests", "dns", "integrations", "listen", "log_level", "notes", "webhooks"}
)
# Inside those, what still needs a restart.
_API_RESTART = (
    "max_header_size",
    "max_headers",
    "header_timeout",
    "keepalive_timeout",
    "max_connections_per_client",
)

WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    """What /health says of the config: a reload that failed, listeners of the route set
    that could not be bound, and keys whose change waits for a restart."""

    reload_errors: tuple[str, ...] = ()
    listen_errors: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()

    @property
    def degraded(self) -> bool:
        return bool(self.reload_errors or self.listen_errors)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a new config changes, next to the running one."""

    config: Config  # the running config after the reload: live parts new, the rest kept
    changed: tuple[str, ...]  # the keys applied, for the log
    restart: tuple[str, ...]  # keys that changed but only take effect on a restart

    @property
    def noop(self) -> bool:
        return not self.changed and not self.restart


def plan(old: Config, new: Config) -> ReloadPlan:
    changed: list[str] = []
    restart: list[str] = []
    updates: dict[str, object] = {}
    for key in type(new).model_fields:
        before, after = getattr(old, key), getattr(new, key)
        if before == after:
            continue
        if key == "proxy":
            # The certificates follow the file while TLS stays on (the listener's context
            # stays, the ones it switches to are swapped), the pages' theme and template are
            # swapped; anything else needs a restart.
            live = before.tls is not None and after.tls is not None
            swapped: dict[str, object] = {}
            if live and before.tls != after.tls:
                changed.append("proxy.tls")
                swapped["tls"] = after.tls
            if before.pages != after.pages:
                changed.append("proxy.pages")
                swapped["pages"] = after.pages
            if swapped:
                updates[key] = before.model_copy(update=swapped)
            kept = {"tls": after.tls if live else before.tls, "pages": after.pages}
            if before.model_copy(update=kept) != after:
                restart.append("proxy")
            continue
        if key not in LIVE_KEYS:
            restart.append(key)
            continue
        if key == "listen":
            if before.api != after.api:
                restart.append("listen.api")
            if before.proxy != after.proxy:
                changed.append("listen.proxy")
                updates[key] = before.model_copy(update={"proxy": after.proxy})
            continue
        if key == "api":
            fixed = [f"api.{k}" for k in _API_RESTART if getattr(before, k) != getattr(after, k)]
            restart.extend(fixed)
            live = after.model_copy(update={k: getattr(before, k) for k in _API_RESTART})
            if live != before:
                changed.append("api")
                updates[key] = live
            continue
        changed.append(key)
        updates[key] = after
    return ReloadPlan(old.model_copy(update=updates), tuple(changed), tuple(restart))


def _fingerprint(path: Path) -> tuple[int, int, int, str] | None:
    """What tells a changed file: inode, size and mtime first, and the content's hash (an
    editor that rewrites the same bytes, or a touch, is no change)."""
    try:
        st = os.stat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # mid-rename or removed: look again on the next round
    return (st.st_ino, st.st_size, st.st_mtime_ns, digest)


class ConfigWatch:
    """Polls the config file (no inotify: it works on every filesystem, bind mounts and
    ConfigMaps included) and calls `changed` once the content differs and has stayed the
    same for one more round, so a file written in pieces is read whole."""

    def __init__(
        self,
        path: Path,
        changed: Callable[[], Awaitable[None]],
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self._path = path
        self._changed = changed
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # for tests: how many looks were taken

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="config-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        seen = await asyncio.to_thread(_fingerprint, self._path)
        pending: tuple[int, int, int, str] | None = None
        while True:
            await asyncio.sleep(self._interval_s)
            self.rounds += 1
            now = await asyncio.to_thread(_fingerprint, self._path)
            if now is None or (seen is not None and now[3] == seen[3]):
                pending = None
                if now is not None:
                    seen = now
                continue
            if pending != now:
                pending = now  # changed: wait one round for the writer to finish
                continue
            seen, pending = now, None
            try:
                await self._changed()
            except Exception:  # a bug in one reload must not end the watch
                log.exception("config reload failed")
