"""The chain's verifier: an intact chain passes; each kind of tampering is named at its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pxproxy.audit.chain import GENESIS, START, ChainHead, encode, line_hash
from pxproxy.audit.verify import ChainBrokenError, verify

from .chains import write_chain, write_lines


def broken(*paths: Path) -> ChainBrokenError:
    with pytest.raises(ChainBrokenError) as info:
        verify([str(p) for p in paths])
    return info.value


def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    result = verify([str(path)])
    assert result.lines == 5
    assert result.start == START
    assert result.head == ChainHead(5, line_hash(lines[-1]))
    first = json.loads(lines[0])
    assert (first["seq"], first["prev"]) == (1, GENESIS)
    assert json.loads(lines[1])["prev"] == line_hash(lines[0])


def test_an_empty_file_has_no_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"")
    assert verify([str(path)]).lines == 0


def test_an_edited_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    lines[2] = lines[2].replace(b'"token":"ops"', b'"token":"eve"')
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 3
    assert "changed after it was written" in exc.problem


def test_an_edit_that_breaks_the_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 4)
    lines[1] = lines[1][:-5]
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 2
    assert "not an audit record" in exc.problem


def test_a_deleted_line_is_named_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    del lines[2]
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 3
    assert "seq 4 where 3 was expected" in exc.problem
    assert "missing" in exc.problem


def test_two_swapped_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 6)
    lines[1], lines[4] = lines[4], lines[1]
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 2
    assert "seq 5 where 2 was expected" in exc.problem
    assert "out of order" in exc.problem


def test_a_copied_line_inserted_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    lines.insert(3, lines[0])
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 4
    assert "seq 1 where 4 was expected" in exc.problem


def test_a_forged_line_with_the_right_seq_and_prev_is_named(tmp_path: Path) -> None:
    # The forger computes prev and seq for the line it inserts; the line after it then
    # still continues the line before the forgery.
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    forged = encode({"token": "ops", "action": "stop"}, ChainHead(2, line_hash(lines[1])))
    lines.insert(2, forged)
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 3
    assert exc.problem.startswith("inserted")


def test_a_first_line_with_seq_1_must_start_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 3)
    lines[0] = lines[0].replace(GENESIS.encode(), b"1" * 64)
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 1
    assert "genesis" in exc.problem


def test_a_line_cut_short_at_the_end_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 3)
    path.write_bytes(b"".join(line + b"\n" for line in lines[:2]) + lines[2][:10])
    exc = broken(path)
    assert exc.at.line == 3
    assert "incomplete" in exc.problem


def test_rotated_files_verify_as_one_chain(tmp_path: Path) -> None:
    old, new = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    old_lines = write_chain(old, 3)
    # The writer continues from the rotated file's last line (logrotate's `.1`).
    new_lines = write_chain(new, 2, first=4)
    assert json.loads(new_lines[0])["prev"] == line_hash(old_lines[-1])
    result = verify([str(old), str(new)])
    assert result.lines == 5
    assert result.start == START
    # Alone, the newer file says what it continues.
    alone = verify([str(new)])
    assert (alone.lines, alone.start) == (2, ChainHead(3, line_hash(old_lines[-1])))


def test_files_given_out_of_order_are_named(tmp_path: Path) -> None:
    old, new = tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"
    write_chain(old, 3)
    write_chain(new, 2, first=4)
    exc = broken(new, old)
    assert (exc.at.file, exc.at.line) == (str(old), 1)
    assert f"continuing {new}" in exc.problem


def test_a_file_missing_from_the_rotation_is_named(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jsonl"
    lines = write_chain(whole, 6)
    parts = [tmp_path / "audit.jsonl.2", tmp_path / "audit.jsonl.1", tmp_path / "audit.jsonl"]
    for n, part in enumerate(parts):
        write_lines(part, lines[2 * n : 2 * n + 2])
    assert verify([str(p) for p in parts]).lines == 6
    exc = broken(parts[0], parts[2])
    assert (exc.at.file, exc.at.line) == (str(parts[2]), 1)
    assert f"seq 5 where 3 was expected (continuing {parts[0]})" in exc.problem


def test_a_line_appended_at_the_end_is_named_with_the_line_before(tmp_path: Path) -> None:
    # Nothing follows to tell an edit of line 3 from a line 4 that does not belong.
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 3)
    lines.append(encode({"token": "ops", "action": "stop"}, ChainHead(3, GENESIS)))
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 3
    assert exc.problem.endswith("prev of line 4, or line 4 does not belong")


def test_a_suspect_line_before_a_non_record_is_the_first_break(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_chain(path, 5)
    _edited = lines[1].replace(b'"token":"ops"', b'"token":"eve"')
    lines[1] = _edited
    lines[3] = b"garbage"
    write_lines(path, lines)
    exc = broken(path)
    assert exc.at.line == 2
    assert "changed after it was written" in exc.problem
