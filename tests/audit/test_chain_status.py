"""The audit chain's status for the API: cached per file change, one check at a time, and
judged against the last record the daemon wrote."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pxproxy.audit.chain import encode, head_after
from pxproxy.audit.chain_status import UNCHAINED, ChainChecker, chain_status
from pxproxy.audit.chained_file import ChainedFile
from pxproxy.audit.verify import Verified, verify


def written(tmp_path: Path, records: int = 3) -> ChainedFile:
    file = ChainedFile(str(tmp_path / "audit.jsonl"))
    for n in range(records):
        file.append({"action": "start", "guest": f"lab:{7390 + n}", "token": "ops"})
    return file


def append_forged(file: ChainedFile) -> None:
    """A valid next line, written by someone other than the daemon."""
    forged = encode({"action": "start", "guest": "lab:7399", "token": "ops"}, file.head)
    with open(file.path, "ab") as f:
        f.write(forged + b"\n")


def replace_last(file: ChainedFile) -> None:
    """A valid line at the last seq, continuing the line before, but not the daemon's."""
    lines = Path(file.path).read_bytes().splitlines(keepends=True)
    other = encode(
        {"action": "stop", "guest": "lab:7392", "token": "ops"}, head_after(lines[-2][:-1])
    )
    Path(file.path).write_bytes(b"".join(lines[:-1]) + other + b"\n")


def rotate_away(file: ChainedFile) -> None:
    os.rename(file.path, file.path + ".1")


def create_empty(file: ChainedFile) -> None:
    Path(file.path).write_bytes(b"")


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(paths: list[str]) -> Verified:
        calls.append(paths[0])
        return verify(paths)

    monkeypatch.setattr("pxproxy.audit.chain_status.verify", counting)
    return calls


async def test_no_file_is_unchained() -> None:
    assert await chain_status(None) is UNCHAINED


async def test_an_unchanged_file_is_verified_once(tmp_path: Path, verifications: list[str]) -> None:
    file = written(tmp_path)
    checker = ChainChecker(file)
    results = await asyncio.gather(*(checker.status() for _ in range(5)))
    assert {r.state for r in results} == {"ok"}
    assert results[0].lines == 3
    assert len(verifications) == 1  # single-flight, then the cache
    assert (await checker.status()).state == "ok"
    assert len(verifications) == 1
    file.append({"action": "stop", "guest": "lab:7393", "token": "ops"})
    fresh = await checker.status()
    assert (fresh.state, fresh.lines, fresh.head) == ("ok", 4, file.head)
    assert len(verifications) == 2
    file.close()


async def test_lines_someone_else_appended_show_broken(tmp_path: Path) -> None:
    file = written(tmp_path)
    append_forged(file)
    status = await ChainChecker(file).status()
    assert status.state == "broken"
    assert "goes on to seq 4, but pxproxy wrote only up to seq 3" in (status.error or "")
    file.close()


async def test_a_replaced_last_line_shows_broken(tmp_path: Path) -> None:
    file = written(tmp_path)
    replace_last(file)
    status = await ChainChecker(file).status()
    assert status.state == "broken"
    assert "its last line (seq 3) is not the record pxproxy wrote" in (status.error or "")
    file.close()


async def test_a_rotated_empty_file_is_fine_and_a_missing_one_unreadable(tmp_path: Path) -> None:
    file = written(tmp_path)
    checker = ChainChecker(file)
    rotate_away(file)
    missing = await checker.status()
    assert missing.state == "unreadable"
    assert "No such file" in str(missing.error)
    create_empty(file)
    empty = await checker.status()
    assert (empty.state, empty.lines) == ("ok", 0)
    # The next record continues the chain in the new file.
    file.append({"action": "start", "guest": "lab:7394", "token": "ops"})
    continued = await checker.status()
    assert (continued.state, continued.lines, continued.start.seq) == ("ok", 1, 3)
    assert continued.to_json()["continues_seq"] == 3
    file.close()
