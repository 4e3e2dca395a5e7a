"""A client's request head as the proxy understood it, checked against RFC 9112 so that it
can be framed one way only. Pure: the server protocol collects the parser's callbacks and asks
`check_head` what they make.
"""

from __future__ import annotations

from dataclasses import dataclass

from .authority import Authority, BadAuthority, parse_host, parse_target


class Refusal(Exception):
    """A request the proxy answers itself and then closes the connection. The text is fixed
    wording: it never quotes the request."""

    def __init__(self, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers


@dataclass(slots=True)
class ClientRequest:
    method: str
    path: str  # the path and query to forward (origin-form, from an absolute-form too)
    authority: Authority  # the one authority the request is routed and forwarded by
    http11: bool
    fields: list[tuple[str, str]]
    body: str  # "none", "length" or "chunked"
    length: int | None
    keep_alive: bool
    websocket: bool  # a WebSocket opening handshake
    expect_continue: bool
    peer: str | None = None
    scheme: str = "http"  # how the client reached pxproxy: "https" through a TLS listener
    # Set as the body arrives: the whole body was read from the client.
    body_done: bool = False

    @property
    def host(self) -> str:
        """The Host header value forwarded: the authority as routed."""
        return self.authority.text


def framing_tail(request: ClientRequest) -> str:
    """The end of a forwarded request head: upgrade and body framing as the proxy checked
    them (never the client's own lines), then the blank line."""
    tail = "Connection: Upgrade\r\nUpgrade: websocket\r\n" if request.websocket else ""
    if request.body == "length":
        tail += f"Content-Length: {request.length}\r\n"
    elif request.body == "chunked":
        tail += "Transfer-Encoding: chunked\r\n"
    elif request.method in ("POST", "PUT", "PATCH") and request.length == 0:
        tail += "Content-Length: 0\r\n"
    return tail + "\r\n"


def check_head(
    method: str,
    target: str,
    version: str,
    fields: list[tuple[str, str]],
    keep_alive: bool,
    upgrade: bool,
) -> ClientRequest:
    """The request the head describes, or Refusal (400 and close for anything that could be
    framed or routed two ways; 405 for CONNECT; 505 for a version other than 1.x)."""
    if method == "CONNECT":
        raise Refusal(
            405,
            "CONNECT is not supported\n",
            (("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),),
        )
    if version not in ("1.1", "1.0"):
        raise Refusal(505, "only HTTP/1.0 and HTTP/1.1 are supported\n")
    http11 = version == "1.1"
    hosts: list[str] = []
    lengths: list[str] = []
    codings: list[str] = []
    te_lines = 0
    expect: str | None = None
    upgrade_to = ""
    for name, value in fields:
        lower = name.lower()
        if lower == "host":
            hosts.append(value)
        elif lower == "content-length":
            lengths.append(value.strip(" \t"))  # optional whitespace is not the value
        elif lower == "transfer-encoding":
            te_lines += 1
            codings.extend(c.strip().lower() for c in value.split(","))
        elif lower == "expect":
            expect = value.strip().lower()
        elif lower == "upgrade":
            upgrade_to = value.strip().lower()
        # llhttp already refuses CR, LF and NUL in values; refuse them here too, so that
        # nothing the parser lets through can split a header line on the way out.
        if "\r" in value or "\n" in value or "\0" in value:
            raise Refusal(400, "invalid header value\n")
    if len(hosts) > 1:
        raise Refusal(400, "more than one Host header\n")
    body, length = "none", None
    if codings:
        if not http11:
            raise Refusal(400, "Transfer-Encoding in an HTTP/1.0 request\n")
        if lengths:
            raise Refusal(400, "both Content-Length and Transfer-Encoding\n")
        if te_lines != 1 or codings != ["chunked"]:
            raise Refusal(400, "Transfer-Encoding other than chunked\n")
        body = "chunked"
    elif lengths:
        if len(lengths) != 1 or not (lengths[0].isdigit() and lengths[0].isascii()):
            raise Refusal(400, "invalid Content-Length\n")
        length = int(lengths[0])
        if length:
            body = "length"
    try:
        routed_by, path = parse_target(target)
        host = parse_host(hosts[0]) if hosts else None
    except BadAuthority as exc:
        raise Refusal(400, f"{exc}\n") from None
    if path == "*" and method != "OPTIONS":
        raise Refusal(400, "invalid request target\n")
    if routed_by is not None:
        # RFC 9112 §3.2.2: the target's authority wins; a Host that says otherwise is a
        # request two hops would route two ways.
        if host is not None and (host.host, host.port) != (routed_by.host, routed_by.port):
            raise Refusal(400, "the request target's authority differs from Host\n")
    elif host is None:
        raise Refusal(400, "a Host header is required\n")
    else:
        routed_by = host
    if expect is not None and expect != "100-continue":
        raise Refusal(417, "only Expect: 100-continue is supported\n")
    websocket = upgrade and method == "GET" and upgrade_to == "websocket"
    return ClientRequest(
        method=method,
        path=path,
        authority=routed_by,
        http11=http11,
        fields=fields,
        body=body,
        length=length,
        keep_alive=keep_alive,
        websocket=websocket,
        expect_continue=expect is not None and http11 and body != "none",
    )
