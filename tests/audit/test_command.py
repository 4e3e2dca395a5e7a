"""`pxproxy audit verify` as a user runs it: the exit status and the line it names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .chains import write_chain, write_lines


def run_verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pxproxy", "audit", "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_intact_file_prints_its_count_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 4)
    done = run_verify(path)
    assert done.returncode == 0, done.stderr
    assert f"{path}: 4 lines, chain intact (a new chain)" in done.stdout
    assert "last line: seq 4, hash " in done.stdout


def _edit(lines: list[bytes]) -> None:
    lines[2] = lines[2].replace(b'"action":"start-3"', b'"action":"stop-3"')


def _delete(lines: list[bytes]) -> None:
    del lines[2]


def _reorder(lines: list[bytes]) -> None:
    lines[2], lines[3] = lines[3], lines[2]


def _insert(lines: list[bytes]) -> None:
    lines.insert(2, b'{"action":"start","guest":"lab:9","prev":"' + b"0" * 64 + b'","seq":3}')


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (_edit, "changed after it was written"),
        (_delete, "seq 4 where 3 was expected"),
        (_reorder, "seq 4 where 3 was expected"),
        (_insert, "inserted: line 4 continues the chain from the line before it"),
    ],
    ids=["edit", "delete", "reorder", "insert"],
)
def test_tampering_names_line_3_and_exits_1(
    tmp_path: Path, tamper: Callable[[list[bytes]], None], problem: str
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 6)
    tamper(lines)
    write_lines(path, lines)
    done = run_verify(path)
    assert done.returncode == 1
    assert f"{path}:3: {problem}" in done.stderr, done.stderr


def test_rotated_files_in_order(tmp_path: Path) -> None:
    old, new = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    write_chain(old, 3)
    write_chain(new, 2, first=4)
    done = run_verify(old, new)
    assert done.returncode == 0, done.stderr
    assert "2 files: 5 lines, chain intact (a new chain)" in done.stdout
    # Alone, the newer file cannot tell a rotation from deleted first lines: refused, with
    # the head it continues, which --continues then accepts.
    alone = run_verify(new)
    assert alone.returncode == 1
    assert f"{new}:1: the chain does not start here" in alone.stderr
    head = alone.stderr.split("--continues ", 1)[1].split()[0]
    accepted = subprocess.run(
        [sys.executable, "-m", "pxproxy", "audit", "verify", str(new), "--continues", head],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "2 lines, chain intact (continuing seq 3, hash " in accepted.stdout


def test_deleting_the_first_lines_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    write_lines(path, lines[2:])
    done = run_verify(path)
    assert done.returncode == 1
    assert f"{path}:1: the chain does not start here" in done.stderr


def test_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    done = run_verify(tmp_path / "absent.jsonl")
    assert done.returncode == 2
    assert "cannot read" in done.stderr
