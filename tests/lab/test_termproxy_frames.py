"""The termproxy framing: round trips, and hostile frames only ever raise FrameError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pxproxy.pve.termproxy_frames import (
    MAX_FRAME,
    AuthLine,
    FrameError,
    Input,
    Keepalive,
    Resize,
    encode_auth,
    encode_input,
    encode_keepalive,
    encode_message,
    encode_resize,
    parse_auth,
    parse_message,
    split_input,
)


def test_input_length_counts_utf8_bytes_and_data_may_hold_colons() -> None:
    frame = encode_input("é:1:\nx")
    assert frame == b"0:7:\xc3\xa9:1:\nx"
    assert parse_message(frame) == Input("é:1:\nx".encode())
    # Text frames (str) carry the same bytes.
    assert parse_message(frame.decode()) == Input("é:1:\nx".encode())


def test_resize_keepalive_auth_round_trip() -> None:
    assert encode_resize(120, 40) == b"1:120:40:"
    assert parse_message(b"1:120:40:") == Resize(120, 40)
    assert parse_message(encode_keepalive()) == Keepalive()
    assert encode_auth("root@pam", "PVEVNC:ab::cd") == b"root@pam:PVEVNC:ab::cd\n"
    assert parse_auth(b"root@pam:PVEVNC:ab::cd\n") == AuthLine("root@pam", "PVEVNC:ab::cd")
    for msg in (Input(b"ls\r"), Resize(80, 24), Keepalive()):
        assert parse_message(encode_message(msg)) == msg


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"", "empty"),
        (b"9:1:a", "unknown message type"),
        (b"0:3:ab", "does not match"),
        (b"0:1:ab", "does not match"),
        (b"0:-1:", "not a non-negative integer"),
        (b"0:+1:a", "not a non-negative integer"),
        (b"0: 1:a", "not a non-negative integer"),
        (b"0:x:a", "not a non-negative integer"),
        (b"0:\xd9\xa1:a", "not a non-negative integer"),  # Arabic-Indic digit one
        (b"0:99999999999999999999:a", "too large"),
        (b"0:5", "input must be"),
        (b"0", "input must be"),
        (b"1:80:24", "resize must be"),
        (b"1:80:24:x", "resize must be"),
        (b"1:0:24:", "positive"),
        (b"1:80:-3:", "not a non-negative integer"),
        (b"1:70000:24:", "exceeds"),
        (b"22", "keepalive must be"),
    ],
)
def test_malformed_frames_raise_frame_error(frame: bytes, needle: str) -> None:
    with pytest.raises(FrameError, match=needle):
        parse_message(frame)


def test_oversize_frame_rejected_both_ways() -> None:
    big = b"a" * MAX_FRAME
    with pytest.raises(FrameError, match="exceeds"):
        parse_message(b"0:%d:%s" % (len(big), big))
    with pytest.raises(FrameError, match="exceeds"):
        encode_input(big)
    frames = split_input(big)
    assert len(frames) == 2
    assert b"".join(p.data for p in map(parse_message, frames) if isinstance(p, Input)) == big


@pytest.mark.parametrize(
    "frame", [b"root@pam:t", b"root@pam\n", b":t\n", b"root@pam:\n", b"u:a\rb\n", b"\xff:t\n"]
)
def test_bad_auth_lines(frame: bytes) -> None:
    with pytest.raises(FrameError):
        parse_auth(frame)


def test_encoders_refuse_what_would_break_the_framing() -> None:
    with pytest.raises(FrameError):
        encode_auth("root@pam", "tick\net")
    with pytest.raises(FrameError):
        encode_auth("a:b", "t")
    with pytest.raises(FrameError):
        encode_resize(0, 10)


@given(st.binary(max_size=300))
def test_fuzz_parse_message_returns_message_or_frame_error(frame: bytes) -> None:
    try:
        msg = parse_message(frame)
    except FrameError:
        return
    assert isinstance(msg, Input | Resize | Keepalive)
    assert parse_message(encode_message(msg)) == msg


@given(st.text(max_size=200))
def test_fuzz_text_frames(frame: str) -> None:
    try:
        msg = parse_message(frame)
    except FrameError:
        pass
    else:
        assert msg == parse_message(frame.encode())
    try:
        auth = parse_auth(frame)
    except FrameError:
        return
    assert f"{auth.user}:{auth.ticket}\n" == frame


@given(st.binary(max_size=2000))
def test_fuzz_input_round_trip(data: bytes) -> None:
    assert parse_message(encode_input(data)) == Input(data)


@given(st.sampled_from([b"0:", b"1:", b"2", b"0:3:"]), st.binary(max_size=40))
def test_fuzz_structured_prefixes(prefix: bytes, rest: bytes) -> None:
    try:
        msg = parse_message(prefix + rest)
    except FrameError:
        return
    assert parse_message(encode_message(msg)) == msg
    assert (prefix + rest).startswith(encode_message(msg)[:1])
