"""The termproxy wire protocol (PVE vncwebsocket for terminals), without any transport.

Client → server, one message per websocket frame:
- first message: `<user>:<ticket>\\n` (the auth line)
- `0:<UTF-8 byte length>:<data>` input (data may contain ':' and newlines)
- `1:<cols>:<rows>:` resize (note the trailing colon)
- `2` keepalive
Server → client: `OK` after a good auth line, then raw pty bytes.

Both sides live here so the lab (server) and pxproxy's client (issue 5) share one definition.
Parsing never raises anything but `FrameError` on hostile input.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AUTH_OK",
    "MAX_FRAME",
    "AuthLine",
    "ClientMessage",
    "FrameError",
    "Input",
    "Keepalive",
    "Resize",
    "encode_auth",
    "encode_input",
    "encode_keepalive",
    "encode_message",
    "encode_resize",
    "parse_auth",
    "parse_message",
    "split_input",
]

MAX_FRAME = 128 * 1024  # termproxy refuses larger frames
MAX_DIMENSION = 65535  # a pty's winsize fields are unsigned 16-bit
AUTH_OK = b"OK"


class FrameError(ValueError):
    """A malformed or oversized termproxy frame; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class AuthLine:
    user: str
    ticket: str


@dataclass(frozen=True, slots=True)
class Input:
    data: bytes


@dataclass(frozen=True, slots=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True, slots=True)
class Keepalive:
    pass


ClientMessage = Input | Resize | Keepalive


def _as_bytes(frame: bytes | bytearray | memoryview | str) -> bytes:
    # Browsers send text frames, our client may send binary ones: both carry the same bytes.
    if isinstance(frame, str):
        try:
            return frame.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates in a str
            raise FrameError("frame is not valid UTF-8") from exc
    return bytes(frame)


def _check_size(raw: bytes) -> None:
    if len(raw) > MAX_FRAME:
        raise FrameError(f"frame of {len(raw)} bytes exceeds the {MAX_FRAME} byte limit")


def _parse_uint(text: bytes, what: str, maximum: int) -> int:
    # Digits only: int() would also accept "+1", " 1", "1_0" and non-ASCII digits.
    if not text or not text.isdigit() or not text.isascii():
        raise FrameError(f"{what} is not a non-negative integer: {text[:20]!r}")
    if len(text) > 10:
        raise FrameError(f"{what} is too large: {text[:20]!r}")
    value = int(text)
    if value > maximum:
        raise FrameError(f"{what} {value} exceeds {maximum}")
    return value


def parse_auth(frame: bytes | bytearray | memoryview | str) -> AuthLine:
    """The first client message: `<user>:<ticket>\\n` (the newline is required)."""
    raw = _as_bytes(frame)
    _check_size(raw)
    if not raw.endswith(b"\n"):
        raise FrameError("auth line must end with a newline")
    try:
        line = raw[:-1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("auth line is not valid UTF-8") from exc
    user, sep, ticket = line.partition(":")
    if not sep or not user or not ticket:
        raise FrameError("auth line must be '<user>:<ticket>\\n'")
    if "\n" in line or "\r" in line:
        raise FrameError("auth line must be a single line")
    return AuthLine(user, ticket)


def parse_message(frame: bytes | bytearray | memoryview | str) -> ClientMessage:
    """One client message after the auth line."""
    raw = _as_bytes(frame)
    _check_size(raw)
    if not raw:
        raise FrameError("empty frame")
    kind = raw[:1]
    if kind == b"2":
        if len(raw) != 1:
            raise FrameError("keepalive must be exactly '2'")
        return Keepalive()
    if kind == b"0":
        if raw[1:2] != b":":
            raise FrameError("input must be '0:<length>:<data>'")
        length_text, sep, data = raw[2:].partition(b":")
        if not sep:
            raise FrameError("input must be '0:<length>:<data>'")
        length = _parse_uint(length_text, "input length", MAX_FRAME)
        if length != len(data):
            raise FrameError(f"input length {length} does not match {len(data)} data bytes")
        return Input(data)
    if kind == b"1":
        parts = raw.split(b":")
        if len(parts) != 4 or parts[0] != b"1" or parts[3] != b"":
            raise FrameError("resize must be '1:<cols>:<rows>:'")
        cols = _parse_uint(parts[1], "cols", MAX_DIMENSION)
        rows = _parse_uint(parts[2], "rows", MAX_DIMENSION)
        if cols == 0 or rows == 0:
            raise FrameError("resize needs positive cols and rows")
        return Resize(cols, rows)
    raise FrameError(f"unknown message type {kind!r}")


def encode_auth(user: str, ticket: str) -> bytes:
    if not user or ":" in user or any(c in user + ticket for c in "\r\n"):
        raise FrameError("user must be non-empty without ':' and neither may contain newlines")
    return f"{user}:{ticket}\n".encode()


def encode_input(data: bytes | str) -> bytes:
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    frame = b"0:%d:%s" % (len(raw), raw)
    _check_size(frame)
    return frame


def encode_resize(cols: int, rows: int) -> bytes:
    if not (0 < cols <= MAX_DIMENSION and 0 < rows <= MAX_DIMENSION):
        raise FrameError(f"bad terminal size {cols}x{rows}")
    return b"1:%d:%d:" % (cols, rows)


def encode_keepalive() -> bytes:
    return b"2"


def encode_message(msg: ClientMessage) -> bytes:
    if isinstance(msg, Input):
        return encode_input(msg.data)
    if isinstance(msg, Resize):
        return encode_resize(msg.cols, msg.rows)
    return encode_keepalive()


def split_input(data: bytes, max_data: int = MAX_FRAME - 16) -> list[bytes]:
    """Input frames for `data`, each within the frame limit (long pastes need several)."""
    if max_data <= 0:
        raise ValueError("max_data must be positive")
    return [encode_input(data[i : i + max_data]) for i in range(0, len(data), max_data)]
