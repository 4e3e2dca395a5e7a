"""The commands behind /exec, /journal and /tail, as argv lists, and their shell form.

Arguments only ever reach a shell through `shell_line`, which quotes each one; user file paths
always come after `--`, so a path can never be read as an option.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

__all__ = [
    "NO_JOURNAL",
    "SYSLOG_FILES",
    "in_container",
    "journal_argv",
    "journal_fallback_argv",
    "shell_line",
    "tail_argv",
]

NO_JOURNAL = b"No journal files were found."
# Where syslog daemons write when a container has no journald (RHEL-likes, Debian).
SYSLOG_FILES = ("/var/log/messages", "/var/log/syslog")


def shell_line(argv: Sequence[str]) -> str:
    """argv as one shell command line: every word quoted, nothing ever expanded."""
    return " ".join(shlex.quote(arg) for arg in argv)


def in_container(vmid: int, argv: Sequence[str]) -> list[str]:
    """`pct exec` runs argv directly in the container (lxc-attach, no shell inside)."""
    return ["pct", "exec", str(vmid), "--", *argv]


def journal_argv(limit: int, units: Sequence[str], follow: bool) -> list[str]:
    argv = ["journalctl", "--no-pager", "-o", "short", "-n", str(limit)]
    for unit in units:
        argv += ["-u", unit]
    if follow:
        argv.append("-f")
    return argv


def tail_argv(limit: int, paths: Sequence[str], follow: bool, *, quiet: bool = False) -> list[str]:
    argv = ["tail", "-n", str(limit)]
    if follow:
        argv.append("-F")
    if quiet:
        argv.append("-q")
    return [*argv, "--", *paths]


def journal_fallback_argv(limit: int, follow: bool) -> list[str]:
    """No journald: the syslog files instead (whichever exists; -q: no file headers)."""
    return tail_argv(limit, SYSLOG_FILES, follow, quiet=True)
