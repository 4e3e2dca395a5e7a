"""Where the state file lives, and opening it without ever stopping the daemon."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config.models import StateConfig
from .memory_store import MemoryStore
from .sqlite_store import SqliteStore
from .store import StateError, StateStore

log = logging.getLogger(__name__)

# The packaged default (the Docker image's volume); used when that directory exists.
SYSTEM_STATE_DIR = Path("/var/lib/pxproxy")
STATE_FILE = "state.db"


def user_state_dir() -> Path:
    """$XDG_STATE_HOME/pxproxy, else ~/.local/state/pxproxy."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "pxproxy"


def state_path(config: StateConfig) -> Path:
    """The configured path; without one /var/lib/pxproxy/state.db where that directory exists
    and is writable, else the user's state directory."""
    if config.path:
        return Path(config.path).expanduser()
    if SYSTEM_STATE_DIR.is_dir() and os.access(SYSTEM_STATE_DIR, os.W_OK | os.X_OK):
        return SYSTEM_STATE_DIR / STATE_FILE
    return user_state_dir() / STATE_FILE


async def open_store(config: StateConfig) -> StateStore:
    """The SQLite store; a MemoryStore, after a WARNING, when the file cannot be used."""
    if not config.enabled:
        log.info("state: persistence turned off (state.enabled: false)")
        return MemoryStore()
    try:
        path = state_path(config)
    except (OSError, RuntimeError) as exc:  # no home directory to put the file in
        log.warning("state: no path for the state file (%s); running without persistence", exc)
        return MemoryStore()
    try:
        store = await SqliteStore.open(path)
    except StateError as exc:
        log.warning("%s; running without persistence: nothing is kept across restarts", exc)
        return MemoryStore()
    log.info("state: %s", path)
    return store
