"""Audit files for the tests: written by the daemon's own writer, then tampered with."""

from __future__ import annotations

from pathlib import Path

from pxproxy.audit.chained_file import ChainedFile


def write_chain(path: Path, count: int, first: int = 1) -> list[bytes]:
    """Append `count` records (actions start-<first>..) to `path`; return the file's lines."""
    chained = ChainedFile(str(path))
    try:
        for n in range(first, first + count):
            chained.append({"token": "ops", "action": f"start-{n}", "guest": f"lab:{n}"})
    finally:
        chained.close()
    return read_lines(path)


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
