"""After a guest's 101 to a WebSocket handshake: bytes both ways as they come, with
backpressure and half-close, until either side closes.

Frames pass untouched (pings, pongs, close codes and all); the relay only follows where each
frame ends, so that when pxproxy stops it can put a 1001 Going Away close frame between frames
to each side, and then end the tunnel within GOING_AWAY_S.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable

from ..shutdown import STOPPING_MESSAGE
from .server import ClientConnection
from .upstream_conn import ResponseHead, UpstreamConnection, UpstreamFailure

GOING_AWAY_S = 1.0
_GOING_AWAY = 1001


class FrameCursor:
    """Where one direction's WebSocket frames end (RFC 6455 §5.2), without copying them."""

    __slots__ = ("_head", "_need")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current frame still to pass
        self._head = b""  # a frame header split across reads

    @property
    def at_boundary(self) -> bool:
        return self._need == 0 and not self._head

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._need:
                take = min(self._need, n - i)
                self._need -= take
                i += take
                continue
            prior = len(self._head)
            head = self._head + data[i : i + 14]
            size = _header_size(head)
            if size is None:
                self._head = head  # incomplete: it holds all that was left
                return
            length, header = size
            self._head = b""
            i += header - prior
            self._need = length


def _header_size(head: bytes) -> tuple[int, int] | None:
    """(payload length, header length) of the frame header at the start of `head`."""
    if len(head) < 2:
        return None
    short = head[1] & 0x7F
    masked = 4 if head[1] & 0x80 else 0
    if short == 126:
        if len(head) < 4 + masked:
            return None
        return struct.unpack_from("!H", head, 2)[0], 4 + masked
    if short == 127:
        if len(head) < 10 + masked:
            return None
        return struct.unpack_from("!Q", head, 2)[0], 10 + masked
    if len(head) < 2 + masked:
        return None
    return short, 2 + masked


def close_frame(code: int, reason: str, *, masked: bool) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:123]
    if not masked:
        return bytes((0x88, len(payload))) + payload
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + key + body


class Tunnel:
    """The client connection's handler and the upstream connection's sink after a 101."""

    def __init__(
        self,
        conn: ClientConnection,
        up: UpstreamConnection,
        registry: set[Tunnel],
        *,
        activity: Callable[[], None],
        on_end: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._up = up
        self._registry = registry
        self._activity = activity
        self._on_end = on_end
        self._to_guest = FrameCursor()
        self._to_client = FrameCursor()
        self._client_eof = False
        self._guest_eof = False
        self._going_away: tuple[bool, bool] | None = None  # (client told, guest told)
        self._timer: asyncio.TimerHandle | None = None
        self._ended = False

    def begin(self, early: bytes) -> None:
        self._registry.add(self)
        self._conn.handler = self
        self._up.handover(self)
        if early:
            self.client_body(early)

    # ------------------------------------------------------------------ client → guest

    def client_body(self, data: bytes) -> None:
        if self._ended:
            return
        if not data:
            self._client_eof = True
            self._up.write_eof()
            self._maybe_end()
            return
        if self._going_away is not None and self._going_away[1]:
            return  # the guest was sent a close: nothing may follow it
        self._to_guest.feed(data)
        self._up.write(data)
        self._activity()
        if self._going_away is not None:
            self._say_going_away()

    def client_body_end(self) -> None:
        return None

    def client_flush(self) -> None:
        return None

    def client_writable(self) -> None:
        self._up.resume()

    def client_lost(self) -> None:
        self._up.close()
        self._end()

    def stop(self) -> None:
        if self._going_away is None and not self._ended:
            self._going_away = (False, False)
            self._say_going_away()
            self._timer = asyncio.get_running_loop().call_later(GOING_AWAY_S, self._cut)

    # ------------------------------------------------------------------ guest → client

    def tunnel_data(self, data: bytes) -> None:
        if self._ended:
            return
        if not data:
            self._guest_eof = True
            transport = self._conn.transport
            if transport is not None and transport.can_write_eof():
                transport.write_eof()
            else:
                self._conn.close_soon()
            self._maybe_end()
            return
        if self._going_away is not None and self._going_away[0]:
            return
        self._to_client.feed(data)
        self._conn.write(data)
        self._activity()
        if self._going_away is not None:
            self._say_going_away()

    def upstream_flush(self) -> None:
        if self._conn.writing_paused:
            self._up.pause()

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self._conn.resume_reading("tunnel")
        else:
            self._conn.pause_reading("tunnel")

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        self._conn.close_soon()
        self._end()

    def response_head(self, head: ResponseHead) -> None:
        return None

    def response_body(self, data: bytes) -> None:
        return None

    def response_end(self) -> None:
        return None

    # ------------------------------------------------------------------ endings

    def _say_going_away(self) -> None:
        """1001 to each side whose stream is between frames."""
        assert self._going_away is not None
        told_client, told_guest = self._going_away
        if not told_client and self._to_client.at_boundary:
            self._conn.write(close_frame(_GOING_AWAY, STOPPING_MESSAGE, masked=False))
            told_client = True
        if not told_guest and self._to_guest.at_boundary:
            self._up.write(close_frame(_GOING_AWAY, STOPPING_MESSAGE, masked=True))
            told_guest = True
        self._going_away = (told_client, told_guest)

    def _cut(self) -> None:
        self._timer = None
        self._conn.close_soon()
        self._up.close()
        self._end()

    def _maybe_end(self) -> None:
        if self._client_eof and self._guest_eof:
            self._conn.close_soon()
            self._up.close()
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_end()
