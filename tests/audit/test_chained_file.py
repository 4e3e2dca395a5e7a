"""The daemon's audit file writer: permissions, continuing a chain, following rotation."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from pxproxy.api.audit import AuditLog, AuditRecord
from pxproxy.audit.chain import ChainHead, line_hash
from pxproxy.audit.chained_file import AuditFileError, ChainedFile, last_line
from pxproxy.audit.verify import ChainBrokenError, verify

from .chains import read_lines, write_chain


def record(n: int) -> dict[str, object]:
    return {"token": "ops", "action": "exec", "detail": {"argv": ["echo", str(n)]}}


def test_a_new_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = os.umask(0)  # even with no umask to narrow it
    try:
        write_chain(path, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_readable_file_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    path.touch(mode=0o644)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, "pxproxy.audit.chained_file"):
        ChainedFile(str(path)).close()
    assert "has mode 644" in caplog.text


def test_a_restart_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_chain(path, 3)
    again = ChainedFile(str(path))
    assert again.head == ChainHead(3, line_hash(first[-1]))
    again.append(record(4))
    again.close()
    assert verify([str(path)]).lines == 4


def test_the_last_line_is_found_past_a_read_block(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chained = ChainedFile(str(path))
    for n in range(3):
        chained.append({"detail": {"argv": ["x" * 20000, str(n)]}})
    chained.close()
    lines = read_lines(path)
    assert last_line(str(path)) == lines[-1]
    assert ChainedFile(str(path)).head == ChainHead(3, line_hash(lines[-1]))


def test_a_line_cut_short_by_a_crash_is_ended_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 2)
    with path.open("ab") as f:
        f.write(b'{"token":"ops","act')  # the machine died here
    chained = ChainedFile(str(path))
    assert chained.head == ChainHead(2, line_hash(lines[-1]))
    chained.append(record(3))
    chained.close()
    after = read_lines(path)
    assert after[2] == b'{"token":"ops","act'  # kept, on a line of its own
    assert json.loads(after[3])["seq"] == 3
    with pytest.raises(ChainBrokenError, match=":3: not an audit record"):
        verify([str(path)])


def test_logrotate_create_continues_the_chain_in_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chained = ChainedFile(str(path))
    chained.append(record(1))
    chained.append(record(2))
    # logrotate `create`: rename, then a new empty file under the old name.
    path.rename(tmp_path / "audit.jsonl.1")
    path.touch(mode=0o600)
    chained.append(record(3))
    # A rename with no new file yet: pxproxy creates it.
    (tmp_path / "audit.jsonl.1").rename(tmp_path / "audit.jsonl.2")
    path.rename(tmp_path / "audit.jsonl.1")
    chained.append(record(4))
    chained.close()
    files = [str(tmp_path / f"audit.jsonl{s}") for s in (".2", ".1", "")]
    assert [len(read_lines(Path(f))) for f in files] == [2, 1, 1]
    assert verify(files).lines == 4
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_copytruncate_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    chained = ChainedFile(str(path))
    chained.append(record(1))
    chained.append(record(2))
    shutil.copyfile(path, tmp_path / "audit.jsonl.1")
    os.truncate(path, 0)
    chained.append(record(3))
    chained.close()
    assert path.read_bytes().count(b"\n") == 1  # written at the new end, no hole before it
    assert verify([str(tmp_path / "audit.jsonl.1"), str(path)]).lines == 3


def test_a_restart_after_rotation_continues_from_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_chain(path, 2)
    path.rename(tmp_path / "audit.jsonl.1")
    path.touch()
    write_chain(path, 1, first=3)
    assert verify([str(tmp_path / "audit.jsonl.1"), str(path)]).lines == 3


def test_an_unopenable_file_names_itself(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nowhere" / "audit.jsonl"
    with pytest.raises(AuditFileError, match=r"cannot open .*nowhere/audit\.jsonl: No such file"):
        ChainedFile(str(missing_dir))


def test_a_failed_write_goes_to_the_logger_and_the_chain_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(path))
    audit.write(AuditRecord("ops", "start", "lab:1"))
    # Rotated away, and something that is not a file in its place: nothing can be written.
    path.rename(tmp_path / "audit.jsonl.1")
    path.mkdir()
    with caplog.at_level(logging.INFO, "pxproxy"):
        audit.write(AuditRecord("ops", "stop", "lab:1"))
    assert "cannot write to the audit file" in caplog.text
    lost = [r for r in caplog.records if r.name == "pxproxy.audit"]
    assert [json.loads(r.getMessage())["action"] for r in lost] == ["stop"]
    path.rmdir()
    audit.write(AuditRecord("ops", "reboot", "lab:1"))
    audit.close()
    assert verify([str(tmp_path / "audit.jsonl.1"), str(path)]).lines == 2
    assert json.loads(read_lines(path)[0])["action"] == "reboot"


def test_a_write_cut_short_by_an_error_does_not_glue_the_next_record_onto_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    chained = ChainedFile(str(path))
    chained.append(record(1))
    real_write = os.write
    calls = 0

    def half_then_full_disk(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, data[: len(data) // 2])  # part of the line lands
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        chained.append(record(2))
    monkeypatch.setattr(os, "write", real_write)
    chained.append(record(3))
    chained.close()
    lines = read_lines(path)
    # The fragment is a line of its own; the next record is whole and parses.
    assert len(lines) == 3
    assert json.loads(lines[2])["detail"]["argv"] == ["echo", "3"]
    with pytest.raises(ChainBrokenError) as broken:
        verify([str(path)])
    assert broken.value.at.line == 2  # verify names the fragment
