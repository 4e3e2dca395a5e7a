"""Config reload units: what `plan()` applies and what it names as restart-only, and the
file watch that notices a real file changing (counted rounds, no fixed sleeps)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pxproxy.config.models import Config
from pxproxy.reload import ConfigWatch, plan

from .support import wait_for

BASE: dict[str, Any] = {
    "proxmox": [
        {"name": "home", "url": "https://127.0.0.1:8006", "token_id": "a@pve!b", "secret": "s"}
    ],
    "listen": {"proxy": "127.0.0.1:8080", "api": "127.0.0.1:8081"},
    "api": {"tokens": [{"name": "ops", "secret": "old-secret-0123456789"}]},
    "routes": [{"host": "wiki.test", "guest": "wiki", "port": 80}],
}


def config(**changes: Any) -> Config:
    data = {**BASE, **changes}
    return Config.model_validate(data)


def test_the_same_config_is_a_noop() -> None:
    change = plan(config(), config())
    assert change.noop
    assert change.changed == change.restart == ()
    assert change.config == config()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("routes", [{"host": "blog.test", "guest": "blog", "port": 80}]),
        ("api", {"tokens": [{"name": "ops", "secret": "new-secret-0123456789"}]}),
        ("guests", {"wiki": {"aliases": ["w"]}}),
        ("dns", {"listen": "127.0.0.1:5353", "zone": "pve.internal"}),
        ("integrations", {"public": True}),
        ("log_level", "debug"),
    ],
)
def test_live_keys_are_applied(key: str, value: Any) -> None:
    new = config(**{key: value})
    change = plan(config(), new)
    assert change.changed == (key,)
    assert change.restart == ()
    assert getattr(change.config, key) == getattr(new, key)


def test_listen_proxy_is_applied_and_listen_api_needs_a_restart() -> None:
    new = config(listen={"proxy": "127.0.0.1:9080", "api": "127.0.0.1:9081"})
    change = plan(config(), new)
    assert change.changed == ("listen.proxy",)
    assert change.restart == ("listen.api",)
    assert change.config.listen.proxy == "127.0.0.1:9080"
    assert change.config.listen.api == "127.0.0.1:8081"  # the one still bound


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (
            "proxmox",
            [
                {
                    "name": "home",
                    "url": "https://127.0.0.2:8006",
                    "token_id": "a@pve!b",
                    "secret": "s",
                }
            ],
        ),
        ("state", {"path": "/tmp/elsewhere.json"}),
        ("audit", {"path": "/tmp/elsewhere.log"}),
        ("proxy", {"connect_timeout": "9s"}),
        ("proxy", {"workers": 2}),  # its processes bind beside a listener that must allow it
        ("shutdown_grace", "3s"),
    ],
)
def test_restart_only_keys_are_named_and_kept(key: str, value: Any) -> None:
    old, new = config(), config(**{key: value})
    change = plan(old, new)
    assert change.changed == ()
    assert change.restart == (key,)
    assert getattr(change.config, key) == getattr(old, key)
    assert not change.noop


def test_api_head_limits_need_a_restart_while_its_tokens_apply() -> None:
    api = {
        "tokens": [{"name": "ops", "secret": "new-secret-0123456789"}],
        "max_header_size": 4096,
        "header_timeout": "3s",
    }
    old = config()
    change = plan(old, config(api=api))
    assert change.changed == ("api",)
    assert change.restart == ("api.max_header_size", "api.header_timeout")
    running = change.config.api
    assert running.tokens[0].secret.get_secret_value() == "new-secret-0123456789"
    assert running.max_header_size == old.api.max_header_size
    assert running.header_timeout == old.api.header_timeout


def test_only_api_head_limits_changed_applies_nothing() -> None:
    change = plan(config(), config(api={**BASE["api"], "keepalive_timeout": "1s"}))
    assert change.changed == ()
    assert change.restart == ("api.keepalive_timeout",)
    assert change.config.api == config().api


# ---------------------------------------------------------------------- the file watch


class Calls:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


async def rounds_past(watch: ConfigWatch, extra: int) -> None:
    """Wait until the watch took `extra` more looks than now."""
    target = watch.rounds + extra
    await wait_for(lambda: watch.rounds >= target, 10, f"{extra} more rounds of the watch")


@pytest.fixture
async def watched(tmp_path: Path) -> Any:
    path = tmp_path / "pxproxy.yml"
    path.write_text("routes: []\n")
    calls = Calls()
    watch = ConfigWatch(path, calls, interval_s=0.02)
    watch.start()
    await rounds_past(watch, 1)  # the first fingerprint is taken
    try:
        yield path, watch, calls
    finally:
        await watch.stop()


async def test_a_rewritten_file_is_one_callback(watched: Any) -> None:
    path, watch, calls = watched
    path.write_text("routes: [1]\n")
    await wait_for(lambda: calls.count >= 1, 10, "the callback")
    # Many more rounds with the file unchanged: still exactly one.
    await rounds_past(watch, 5)
    assert calls.count == 1


async def test_the_same_bytes_or_a_touch_is_no_change(watched: Any) -> None:
    path, watch, calls = watched
    path.write_text("routes: []\n")  # an editor saving without changes
    await rounds_past(watch, 3)
    later = os.stat(path).st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))  # touch
    await rounds_past(watch, 3)
    assert calls.count == 0


async def test_a_file_replaced_by_rename_with_new_content_is_one_callback(
    watched: Any, tmp_path: Path
) -> None:
    path, watch, calls = watched
    tmp = tmp_path / "pxproxy.yml.new"
    tmp.write_text("routes: [2]\n")
    os.replace(tmp, path)  # how editors and config management write atomically
    await wait_for(lambda: calls.count == 1, 10, "the callback")
    await rounds_past(watch, 3)
    assert calls.count == 1


async def test_a_removed_then_restored_file(watched: Any) -> None:
    path, watch, calls = watched
    path.unlink()
    await rounds_past(watch, 3)
    assert calls.count == 0  # a missing file is not a change to apply
    path.write_text("routes: []\n")  # back with the same content: nothing to do
    await rounds_past(watch, 3)
    assert calls.count == 0
    path.unlink()
    await rounds_past(watch, 2)
    path.write_text("routes: [3]\n")  # back with new content: one reload
    await wait_for(lambda: calls.count == 1, 10, "the callback")
    await rounds_past(watch, 3)
    assert calls.count == 1


async def test_a_failing_callback_does_not_end_the_watch(watched: Any) -> None:
    path, watch, _ = watched
    seen: list[int] = []

    async def broken() -> None:
        seen.append(1)
        raise RuntimeError("a bug in one reload")

    watch._changed = broken
    path.write_text("routes: [4]\n")
    await wait_for(lambda: len(seen) == 1, 10, "the first callback")
    path.write_text("routes: [5]\n")
    await wait_for(lambda: len(seen) == 2, 10, "the second callback")
