"""One request relayed to a guest and its response relayed back: the client connection's
handler and the upstream connection's sink at once, driven by their callbacks.

The request head is built as bytes and goes out in one write with whatever of the body is at
hand; the body follows as it arrives, re-framed (Content-Length as checked, or chunked again),
never with the client's framing passed on. The response goes back the same way: its head
re-framed, each read from the guest written to the client in one write. Backpressure is the
transports': a full write buffer on one side pauses reading on the other. The only Task is the
connect of a new upstream connection, or the wait for a sleeping guest; a kept-alive exchange
to a ready guest runs on callbacks alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..shutdown import DaemonStopping
from ..wake.contract import ALWAYS_READY, Gate, WakeError, WakeState
from . import waiting
from .headers import client_response_headers, upstream_request_headers
from .pool import PoolKey, UpstreamPool
from .relay import relay_head
from .replies import Reply, problem, reason
from .request import ClientRequest, framing_tail
from .server import ClientConnection
from .tunnel import Tunnel
from .upstream import Upstream, UpstreamError
from .upstream_conn import ResponseHead, UpstreamConnection, UpstreamFailure

if TYPE_CHECKING:
    from .http import HttpProxy, RouteMatch

log = logging.getLogger("pxproxy.proxy.http")

# gate.activity() at most this often per exchange: cheap enough for every chunk of a download.
ACTIVITY_INTERVAL_S = 0.5
# Body bytes held for an upstream connection not yet there (a connect, a wake) before the
# client is paused.
PENDING_HIGH_WATER = 256 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
# A response body up to this size, of known length, is gathered and sent with its head in one
# write: one syscall instead of several, and a guest that breaks off inside it gets the
# client a clean 502 rather than a cut connection.
SMALL_BODY_BYTES = 64 * 1024
# A chunked request body is read this far before the guest is asked: one that turns out
# malformed within it (a bad chunk size) never reaches the guest at all. Past it, the body
# streams, and a bad chunk cuts the guest's connection short of a complete request.
CHUNKED_HOLD_BYTES = 64 * 1024


class Activity:
    """Reports activity to the gate, at most every ACTIVITY_INTERVAL_S."""

    __slots__ = ("_gate", "_next")

    def __init__(self, gate: Gate | None) -> None:
        self._gate = gate
        self._next = 0.0

    def __call__(self) -> None:
        gate = self._gate
        if gate is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._next = now + ACTIVITY_INTERVAL_S
            gate.activity()


class Exchange:
    """Handler (server.py) and ResponseSink (upstream_conn.py) for one request."""

    __slots__ = (
        "_activity",
        "_attempt",
        "_body_sent_any",
        "_chunked_out",
        "_conn",
        "_deferred",
        "_done",
        "_events",
        "_gate",
        "_gathering",
        "_head",
        "_head_sent",
        "_health",
        "_hold",
        "_keep_alive",
        "_key",
        "_match",
        "_opened",
        "_out",
        "_pending",
        "_pending_size",
        "_proxy",
        "_quiet",
        "_relayed",
        "_request",
        "_reused",
        "_sent_body",
        "_started",
        "_status",
        "_task",
        "_up",
        "_upstream",
        "_upstream_s",
    )

    def __init__(
        self,
        proxy: HttpProxy,
        conn: ClientConnection,
        request: ClientRequest,
        match: RouteMatch,
        gate: Gate,
        *,
        health: bool,
        relayed: bool = False,
    ) -> None:
        self._proxy = proxy
        self._conn = conn
        self._request = request
        self._match = match
        self._gate = gate
        self._health = health  # a health check: never wakes, never counts as activity
        # To the daemon's relay listener (proxy/relay.py): the daemon counts it, wakes for
        # it and holds its guest; this worker only carries the bytes.
        self._relayed = relayed
        # A route without idle-watch has nothing to tell of activity or holds.
        self._quiet = health or gate is ALWAYS_READY or relayed
        self._activity = Activity(None if self._quiet else gate)
        self._hold: AbstractContextManager[None] | None = None
        self._upstream: Upstream | None = None
        self._up: UpstreamConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._sent_body = 0
        self._body_sent_any = False
        self._out: list[bytes] = []
        self._chunked_out = False
        self._keep_alive = False
        self._head_sent = False  # the response head was made (it may still be gathered)
        self._gathering = False  # a small body: head and body go out together at the end
        self._status = 0
        self._events = False  # a text/event-stream: ends cleanly when pxproxy stops
        self._started = 0.0
        self._upstream_s: float | None = None
        self._reused = False
        self._attempt = 0
        self._done = False
        self._opened = False
        self._deferred = False  # a chunked body is being read before the guest is asked

    # ------------------------------------------------------------------ starting

    def start(self) -> None:
        limit = self._proxy.config.max_body_size
        length = self._request.length
        if limit and length is not None and length > limit:
            self._reply(too_large(limit))
            return
        if self._gate.state is not WakeState.READY:
            self._task = self._proxy.spawn(self._wait(), f"pxproxy-held-{self._match.name}")
            self._conn.pause_reading("held")
            return
        self._forward()

    async def _wait(self) -> None:
        route, host = self._match.route, self._request.host
        stopping = self._proxy.stopping
        try:
            if stopping.is_set():
                raise DaemonStopping
            if self._health:
                await self._gate.ready(wake=False)
            else:
                await stopping.race(self._gate.ready())
        except DaemonStopping:
            self._reply(waiting.stopping_problem(guest=route.guest, host=host))
            return
        except WakeError as exc:
            if self._health:
                self._reply(waiting.asleep_for_health_check(exc, guest=route.guest, host=host))
            else:
                self._reply(waiting.wake_failed(exc, guest=route.guest, host=host))
            return
        finally:
            self._task = None
        if self._done:
            return
        self._conn.resume_reading("held")
        self._forward()

    def _forward(self) -> None:
        proxy = self._proxy
        route = self._match.route
        relay = proxy.relay if self._relayed else None
        if relay is not None:
            upstream = self._upstream = relay.upstream
        else:
            try:
                upstream = self._upstream = proxy.upstream_for(route)
            except UpstreamError as exc:
                self._reply(
                    problem(502, "Bad Gateway", str(exc), guest=exc.guest, host=self._request.host)
                )
                return
            if self._request.websocket:
                refused = waiting.handshake_refusal(self._request)
                if refused is not None:
                    self._reply(refused)  # before the guest is asked: it costs no connection
                    return
            proxy.metrics.connection_opened(self._match.name)
            self._opened = True
        if not self._quiet:
            hold = self._gate.hold()
            hold.__enter__()
            self._hold = hold
            self._gate.activity()
        if relay is not None:
            self._head = relay_head(self._request, scheme=self._conn.scheme, secret=relay.secret)
        else:
            self._head = self._request_head(upstream)
        self._key = PoolKey(upstream.address, upstream.port, upstream.scheme == "https")
        self._started = time.monotonic()
        request = self._request
        if request.body == "chunked" and not request.body_done and relay is None:
            # (Relayed at once: the daemon reads the first stretch itself, and says go on.)
            self._deferred = True
            if request.expect_continue:
                self._conn.write_interim(_CONTINUE)  # the client waits for it to send the body
            return
        self._send()

    def _pool(self) -> UpstreamPool:
        relay_pool = self._proxy.relay_pool
        return relay_pool if self._relayed and relay_pool is not None else self._proxy.pool

    def _send(self) -> None:
        self._deferred = False
        self._attempt += 1
        up = self._pool().take(self._key)
        if up is not None:
            self._reused = True
            self._attach(up)
            return
        self._reused = False
        self._task = self._proxy.spawn(self._connect(), f"pxproxy-connect-{self._match.name}")

    async def _connect(self) -> None:
        try:
            up = await self._pool().connect(self._key)
        except UpstreamFailure as failure:
            self._task = None
            self.upstream_failed(failure)
            return
        self._task = None
        if self._done:
            up.close()
            return
        self._attach(up)

    def _attach(self, up: UpstreamConnection) -> None:
        self._up = up
        request = self._request
        data = self._head
        if self._pending:
            data += b"".join(self._pending)
            self._body_sent_any = True
            self._pending.clear()
            self._pending_size = 0
            self._conn.resume_reading("pending")
        if (
            request.expect_continue
            and not request.body_done
            and not self._body_sent_any
            and request.body != "chunked"
            and not self._relayed  # the daemon's 100 comes through response_continue
        ):
            # Sent only now, once the guest is there: the point of Expect is to hear "no"
            # early, and a refusal before this (404, 413, 502) closes instead.
            self._conn.write_interim(_CONTINUE)
        up.start(
            self,
            data,
            head_request=request.method == "HEAD",
            upgrade=request.websocket,
            body_pending=not request.body_done,
        )

    def _request_head(self, upstream: Upstream) -> bytes:
        proxy = self._proxy
        request = self._request
        fields = upstream_request_headers(
            request.fields,
            host=request.host,
            peer=request.peer,
            proto=request.scheme,
            trusted=request.peer in proxy.trusted,
        )
        target = proxy.prefix_of(self._match.route) + request.path if request.path != "*" else "*"
        lines = [f"{request.method} {target} HTTP/1.1\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in fields)
        lines.append(framing_tail(request))
        return "".join(lines).encode("latin-1")

    # ------------------------------------------------------------------ the client's side

    def client_body(self, data: bytes) -> None:
        if self._done or not data:
            return
        limit = self._proxy.config.max_body_size
        self._sent_body += len(data)
        if limit and self._sent_body > limit:
            self._body_too_large(limit)
            return
        self._activity()
        if self._request.body == "chunked":
            data = b"%x\r\n%b\r\n" % (len(data), data)
        up = self._up
        if up is not None:
            self._body_sent_any = True
            up.write(data)
            return
        self._pending.append(data)
        self._pending_size += len(data)
        if self._deferred and self._pending_size >= CHUNKED_HOLD_BYTES:
            self._send()
        elif self._pending_size > PENDING_HIGH_WATER:
            self._conn.pause_reading("pending")

    def client_body_end(self) -> None:
        if self._done:
            return
        if self._request.body != "chunked":
            if self._up is not None:
                self._up.body_sent()
            return
        if self._up is not None:
            self._up.write(_LAST_CHUNK)
            self._up.body_sent()
        else:
            self._pending.append(_LAST_CHUNK)
            if self._deferred:
                self._send()

    def client_flush(self) -> None:
        return None

    def client_writable(self) -> None:
        if self._up is not None:
            self._up.resume()

    def client_lost(self) -> None:
        if self._done:
            return
        if self._task is not None:
            self._task.cancel()
        up, self._up = self._up, None
        if up is not None:
            up.close()  # a response not read to its end: the connection cannot be reused
        self._end(self._status or 499)

    def stop(self) -> None:
        """pxproxy is stopping: an event stream ends cleanly (its client reconnects to the
        next instance); any other body runs on through the grace period, since a cut one
        would look complete. Requests held for a wake get their 503 from the wait."""
        if not self._events or self._done or not self._head_sent:
            return
        if self._chunked_out:
            self._out.append(_LAST_CHUNK)
        self._flush()
        up, self._up = self._up, None
        if up is not None:
            up.close()
        self._end(self._status)
        self._conn.finish(keep_alive=False)

    def _body_too_large(self, limit: int) -> None:
        up, self._up = self._up, None
        if up is not None:
            up.close()  # aborts the upload to the guest mid-body
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._head_sent:
            self._end(self._status)
            self._conn.abort()
            return
        self._reply(too_large(limit))

    # ------------------------------------------------------------------ the guest's side

    def response_head(self, head: ResponseHead) -> None:
        if self._done:
            return
        self._upstream_s = time.monotonic() - self._started
        self._status = head.status
        request = self._request
        conn = self._conn
        if head.status == 101:
            self._switch(head)
            return
        lines = [f"HTTP/1.1 {head.status} {head.reason or reason(head.status)}\r\n"]
        server = False
        for name, value in client_response_headers(head.fields):
            lines.append(f"{name}: {value}\r\n")
            if not server and name.lower() == "server":
                server = True
            elif name.lower() == "content-type" and value.startswith("text/event-stream"):
                self._events = True
        if not server:
            lines.append("Server: pxproxy\r\n")  # the guest's own Server header passes
        keep = request.keep_alive and not conn.stopping
        framing = head.framing
        if framing == "length" or (
            framing == "none" and head.length is not None and head.status != 204
        ):
            lines.append(f"Content-Length: {head.length}\r\n")
        elif framing in ("chunked", "close"):
            if request.http11:
                lines.append("Transfer-Encoding: chunked\r\n")
                self._chunked_out = True
            else:
                keep = False  # an HTTP/1.0 client: the close ends the body
        if not request.body_done:
            keep = False  # the rest of the body is not worth reading
        self._keep_alive = keep
        lines.append("\r\n" if keep else "Connection: close\r\n\r\n")
        self._out.append("".join(lines).encode("latin-1"))
        self._head_sent = True
        self._gathering = framing == "length" and (head.length or 0) <= SMALL_BODY_BYTES

    def response_body(self, data: bytes) -> None:
        if self._done:
            return
        out = self._out
        if self._chunked_out:
            # Three pieces, written as one vector: the body itself is never copied.
            out.append(b"%x\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        else:
            out.append(data)

    def response_end(self) -> None:
        if self._done:
            return
        if self._chunked_out:
            self._out.append(_LAST_CHUNK)
        self._gathering = False
        self._flush()
        up, self._up = self._up, None
        if up is not None:
            if self._request.body_done:
                self._pool().release(up)
            else:
                up.close()
        self._activity()
        self._end(self._status)
        self._conn.finish(keep_alive=self._keep_alive)

    def tunnel_data(self, data: bytes) -> None:
        return None  # a Tunnel takes the connection over at the 101

    def response_continue(self) -> None:
        """The daemon's 100 Continue to a relayed request: the client's go-ahead."""
        request = self._request
        if self._relayed and request.expect_continue and not self._done and not self._head_sent:
            self._conn.write_interim(_CONTINUE)

    def upstream_failed(self, failure: UpstreamFailure) -> None:
        if self._done:
            return
        self._up = None
        request = self._request
        if self._head_sent:
            guest = self._upstream.guest if self._upstream else "?"
            log.warning("%s: guest %s broke off the response: %s", self._match.name, guest, failure)
            if self._gathering:
                self._out.clear()  # nothing went out yet: the client can still get a clean 502
                self._head_sent = self._gathering = False
                text = f"guest {guest} broke off its response"
                self._reply(problem(502, "Bad Gateway", text, guest=guest))
                return
            # The status line is gone already: all we can do is cut the client off, so it
            # sees a truncated body rather than a complete-looking one.
            self._flush()
            self._end(self._status)
            self._conn.abort()
            return
        if (
            failure.kind == "closed"
            and self._reused
            and self._attempt == 1
            and request.method in _IDEMPOTENT
            and request.body == "none"
        ):
            # A pooled connection the guest had already closed: safe to send again once.
            self._send()
            return
        self._reply(self._error_reply(failure))

    def upstream_flush(self) -> None:
        self._flush()
        up = self._up
        if up is not None and self._conn.writing_paused:
            up.pause()  # the client is slow: let the guest's side fill and push back

    def upstream_writable(self, writable: bool) -> None:
        if writable:
            self._conn.resume_reading("upstream")
        else:
            self._conn.pause_reading("upstream")

    # ------------------------------------------------------------------ endings

    def _flush(self) -> None:
        out = self._out
        if out and not self._gathering:
            if len(out) == 1:
                self._conn.write(out[0])
            elif len(out) < 8 and sum(map(len, out)) <= SMALL_BODY_BYTES:
                self._conn.write(b"".join(out))  # a copy of little is cheaper than a vector
            else:
                self._conn.writelines(out)
            out.clear()
            self._activity()

    def _switch(self, head: ResponseHead) -> None:
        """A 101 to a WebSocket handshake: the head goes to the client, then bytes both ways."""
        up, conn = self._up, self._conn
        assert up is not None
        lines = ["HTTP/1.1 101 Switching Protocols\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in head.fields)
        lines.append("\r\n")
        conn.write("".join(lines).encode("latin-1"))
        self._up = None
        # The exchange ends with the tunnel: its callbacks stop here (`_done`), its
        # accounting when the tunnel closes.
        self._done = True
        tunnel = Tunnel(
            conn,
            up,
            self._proxy.tunnels,
            activity=self._activity,
            on_end=lambda: self._account(101, self._upstream_s),
        )
        tunnel.begin(conn.start_tunnel())

    def _reply(self, reply: Reply) -> None:
        if self._done:
            return
        if self._pending:
            self._pending.clear()
            self._conn.resume_reading("pending")
        self._conn.resume_reading("held")
        if self._relayed and not self._done and self._upstream_s is None:
            # The daemon never answered this one (413 here, its relay listener unreachable):
            # only this worker can count it.
            self._proxy.metrics.request(self._match.name, reply.status, None)
        self._end(reply.status, upstream=False)
        if not self._health:  # monitoring reads the problem document, whatever it accepts
            reply = self._proxy.for_client(self._request, reply, self._match.route)
        self._conn.reply(reply)

    def _end(self, status: int, *, upstream: bool = True) -> None:
        if self._done:
            return
        self._done = True
        self._account(status, self._upstream_s if upstream else None)

    def _account(self, status: int, upstream_s: float | None) -> None:
        """The request is over: counted once, its connection and its hold released."""
        name = self._match.name
        metrics = self._proxy.metrics
        if not self._relayed:
            metrics.request(name, status, upstream_s)
        if self._opened:
            metrics.connection_closed(name)
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.__exit__(None, None, None)

    def _error_reply(self, failure: UpstreamFailure) -> Reply:
        upstream = self._upstream
        assert upstream is not None
        if self._relayed:
            log.error("proxy worker: the daemon's relay listener failed: %s", failure)
            return problem(502, "Bad Gateway", "pxproxy's worker cannot reach the daemon")
        guest = f"guest {upstream.guest} ({upstream.name})"
        cfg = self._proxy.config
        kind = failure.kind
        if kind == "connect-timeout":
            status, detail = (
                504,
                f"{guest} did not accept a connection within {cfg.connect_timeout:g}s",
            )
        elif kind == "timeout":
            status, detail = 504, f"{guest} sent no response within {cfg.read_timeout:g}s"
        elif kind == "connect":
            status, detail = 502, f"cannot connect to {guest}"
        elif kind == "malformed":
            status, detail = 502, f"{guest} sent a response that cannot be relayed"
        else:
            status, detail = 502, f"{guest} failed before responding"
        # The address and the cause are for the operator: the client learns only what happened.
        log.info("%s (%s:%d): %s", detail, upstream.host, upstream.port, failure)
        title = "Gateway Timeout" if status == 504 else "Bad Gateway"
        return problem(status, title, detail, guest=upstream.guest)


def too_large(limit: int) -> Reply:
    # The rest of the body is not worth reading; a new connection starts clean.
    return problem(
        413, "Content Too Large", f"the request body is larger than {limit} bytes", close=True
    )
