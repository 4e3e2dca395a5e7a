from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.pve.upid import Upid, parse_upid

SAMPLE = "UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:"


def test_reference_sample() -> None:
    upid = parse_upid(SAMPLE)
    # Values from the matching /tasks/{upid}/status answer in pve-reference.md.
    assert upid == Upid(
        node="node1",
        pid=1044989,
        pstart=284768076,
        starttime=1661825068,
        type="vzdump",
        id="110",
        user="root@pam",
        raw=SAMPLE,
    )


def test_is_frozen() -> None:
    upid = parse_upid(SAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        upid.node = "other"  # type: ignore[misc]


def test_token_user() -> None:
    upid = parse_upid("UPID:pve:0000ABCD:0001E240:65A1B2C3:qmstart:100:root@pam!automation:")
    assert upid.user == "root@pam!automation"
    assert upid.type == "qmstart"
    assert upid.id == "100"
    assert upid.pid == 0xABCD


def test_empty_id() -> None:
    upid = parse_upid("UPID:pve-01:00001234:00ABCDEF:65A1B2C3:aptupdate::root@pam:")
    assert upid.id == ""
    assert upid.type == "aptupdate"
    assert upid.node == "pve-01"


def test_nine_digit_pstart() -> None:
    # pstart passes 8 hex digits after ~497 days of node uptime.
    upid = parse_upid("UPID:n.example:00001234:1ABCDEF01:65A1B2C3:vncproxy:101:u@pve:")
    assert upid.pstart == 0x1ABCDEF01
    assert upid.node == "n.example"


def test_lowercase_hex() -> None:
    upid = parse_upid("UPID:node1:000ff1fd:10f9374c:630d702c:vzdump:110:root@pam:")
    assert upid.pid == 1044989
    assert upid.starttime == 1661825068


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must start with 'UPID:'"),
        ("upid:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", "must start"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam", "trailing colon"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:root@pam:", "6 fields"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:1:10:root@pam:", "8 fields"),
        ("UPID::000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", "bad node name"),
        ("UPID:-node:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", "bad node name"),
        ("UPID:nöde:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", "bad node name"),
        ("UPID:node1:000FF1FG:10F9374C:630D702C:vzdump:110:root@pam:", "pid"),
        ("UPID:node1:00FF1FD:10F9374C:630D702C:vzdump:110:root@pam:", "pid"),
        ("UPID:node1:000FF1FD:10F9374:630D702C:vzdump:110:root@pam:", "pstart"),
        ("UPID:node1:000FF1FD:10F9374C00:630D702C:vzdump:110:root@pam:", "pstart"),
        ("UPID:node1:000FF1FD:10F9374C:630D702:vzdump:110:root@pam:", "starttime"),
        ("UPID:node1:000FF1FD:10F9374C:+30D702C:vzdump:110:root@pam:", "starttime"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C::110:root@pam:", "empty task type"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110::", "empty user"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam:\n", "control"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vz\x00dump:110:root@pam:", "control"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:1 10:root@pam:", "whitespace"),
        ("UPID:node1:000FF1FD:10F9374C:630D702C:vzdump:110:root@pam\u2028:", "whitespace"),
        (" " + SAMPLE, "whitespace"),
    ],
)
def test_rejects_malformed(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="invalid UPID") as excinfo:
        parse_upid(text)
    assert reason in str(excinfo.value)


def test_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_upid(b"UPID:x:")  # type: ignore[arg-type]


def test_error_message_truncates_huge_input() -> None:
    with pytest.raises(ValueError, match="invalid UPID") as excinfo:
        parse_upid("UPID:" + "a" * 100_000)
    assert len(str(excinfo.value)) < 400


_node = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,30}", fullmatch=True)
# Printable, non-colon, non-space ASCII plus a few non-ASCII letters users may have.
_field_chars = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S"),
    exclude_characters=":",
)
_field = st.text(_field_chars, min_size=1, max_size=20)


@given(
    node=_node,
    pid=st.integers(0, 0xFFFFFFFF),
    pstart=st.integers(0, 0xFFFFFFFFF),
    starttime=st.integers(0, 0xFFFFFFFF),
    task_type=_field,
    task_id=st.one_of(st.just(""), _field),
    user=_field,
    lower=st.booleans(),
)
def test_round_trip(
    node: str,
    pid: int,
    pstart: int,
    starttime: int,
    task_type: str,
    task_id: str,
    user: str,
    lower: bool,
) -> None:
    hexes = f"{pid:08X}:{pstart:08X}:{starttime:08X}"
    if lower:
        hexes = hexes.lower()
    text = f"UPID:{node}:{hexes}:{task_type}:{task_id}:{user}:"
    assert parse_upid(text) == Upid(node, pid, pstart, starttime, task_type, task_id, user, text)


@given(st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_value_error(text: str) -> None:
    try:
        upid = parse_upid(text)
    except ValueError as exc:
        error: str | None = str(exc)
    else:
        error = None
        assert upid.raw == text
        assert text.startswith("UPID:")
        assert text.endswith(":")
    assert error is None or error.startswith("invalid UPID")


@given(st.text(max_size=60), st.integers(0, 8))
def test_mutated_sample_never_crashes(junk: str, position: int) -> None:
    fields = SAMPLE.split(":")
    fields[position] += junk
    text = ":".join(fields)
    try:
        upid = parse_upid(text)
    except ValueError:
        return
    # Whatever survives must still be the sample's structure.
    assert upid.raw == text
    assert upid.node.startswith("node1")
