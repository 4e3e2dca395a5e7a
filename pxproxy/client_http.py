"""The HTTP side of the CLI's client commands: one session to the daemon's API, its failures
turned into messages and exit codes, problem documents (with their candidates) made readable."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import quote

from . import __version__

if TYPE_CHECKING:
    import aiohttp

DEFAULT_API = "http://127.0.0.1:8081"
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2
EXIT_INTERRUPTED = 130
CONNECT_TIMEOUT_S = 10.0
# A JSON answer (guests, routes, a lookup) comes at once; this long means the daemon is stuck.
JSON_READ_TIMEOUT_S = 30.0
# The most candidates an ambiguity error lists; the rest are counted.
MAX_CANDIDATES = 20

T = TypeVar("T")


class CliError(Exception):
    """Ends the command with a message on stderr and an exit code; `status` is the API's HTTP
    status when it answered with an error."""

    def __init__(self, message: str, code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def api_url(explicit: str | None) -> str:
    url: str = explicit or os.environ.get("PXPROXY_API") or DEFAULT_API
    if not url.startswith(("http://", "https://")):
        url = "http://" + url  # "127.0.0.1:8081" is what the config's listen key looks like
    return url.rstrip("/")


def seg(value: str) -> str:
    """A path part; "/" and ":" stay so node/vmid and cluster:vmid read as the API documents."""
    return quote(value, safe="/:")


class ApiClient:
    """One aiohttp session to the API for the whole command (a ref lookup, then the call)."""

    def __init__(self, api: str | None, token: str | None) -> None:
        self.api = api_url(api)
        self.headers = {"User-Agent": f"pxproxy-cli/{__version__}"}
        token = token or os.environ.get("PXPROXY_TOKEN")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout, headers=self.headers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        handle: Callable[[aiohttp.ClientResponse], Awaitable[T]],
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Mapping[str, Any] | None = None,
        read_timeout_s: float | None = JSON_READ_TIMEOUT_S,
    ) -> T:
        """Send one request and hand the successful response to `handle`; map failures to
        CliError with the exit code they mean."""
        import aiohttp

        if self._session is None:
            raise RuntimeError("ApiClient used outside `async with`")
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=read_timeout_s
        )
        api = self.api
        try:
            async with self._session.request(
                method, api + path, params=list(params), json=body, timeout=timeout
            ) as resp:
                if resp.status >= 400:
                    text = (await resp.read())[: 64 * 1024].decode("utf-8", "replace")
                    sent_token = "Authorization" in self.headers
                    message = problem_message(resp.status, resp.reason or "", text, sent_token)
                    raise CliError(message, EXIT_API_ERROR, resp.status)
                return await handle(resp)
        except aiohttp.InvalidURL:
            raise CliError(f"invalid API URL {api!r}", EXIT_UNREACHABLE) from None
        except aiohttp.ClientConnectorError as exc:
            raise CliError(
                f"cannot reach the pxproxy API at {api}: {_reason(exc.os_error)}"
                " (is the daemon running? set --api or $PXPROXY_API)",
                EXIT_UNREACHABLE,
            ) from None
        except TimeoutError:
            raise CliError(
                f"the pxproxy API at {api} stopped answering", EXIT_UNREACHABLE
            ) from None
        except aiohttp.ClientError as exc:
            raise CliError(
                f"connection to the pxproxy API at {api} broke: {exc or type(exc).__name__}",
                EXIT_UNREACHABLE,
            ) from None

    async def json(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        read_timeout_s: float | None = JSON_READ_TIMEOUT_S,
    ) -> Any:
        async def handle(resp: aiohttp.ClientResponse) -> Any:
            text = await resp.text()
            try:
                return json.loads(text)
            except ValueError:
                raise CliError(
                    f"the API answered {method} {path} with something other than JSON",
                    EXIT_API_ERROR,
                ) from None

        return await self.call(method, path, handle, params=params, read_timeout_s=read_timeout_s)


def _reason(error: OSError) -> str:
    # asyncio's strerror is "Connect call failed (...)"; the errno's text says what happened.
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return str(error.strerror or error)  # resolver errors have negative codes


def problem_message(status: int, reason: str, text: str, sent_token: bool) -> str:
    """The problem document's detail (and, for an ambiguous ref, its candidates one per line),
    else the status line and the start of the body."""
    detail = ""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    candidates: list[Any] = []
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        detail = doc["detail"]
        if isinstance(doc.get("candidates"), list):
            candidates = doc["candidates"]
    elif text.strip():
        detail = text.strip().splitlines()[0][:2000]
    message = f"{status} {reason}".rstrip()
    if detail:
        message += f": {detail}"
    if status == 401 and not sent_token:
        message += " (set --token or $PXPROXY_TOKEN)"
    for item in candidates[:MAX_CANDIDATES]:
        message += "\n  " + candidate_line(item)
    if len(candidates) > MAX_CANDIDATES:
        message += f"\n  ... and {len(candidates) - MAX_CANDIDATES} more"
    return message


def candidate_line(item: Any) -> str:
    """One candidate of a 409: a guest (ref, name, node, status) or a node (cluster:name)."""
    if not isinstance(item, dict):
        return str(item)
    if "vmid" in item:
        ref = item.get("ref") or f"{item.get('cluster')}:{item.get('vmid')}"
        name = item.get("name") or "-"
        return f"{ref:<14} {name:<20} node {item.get('node')}, {item.get('status')}"
    node = item.get("node") or item.get("name")
    ip = f"  {item['ip']}" if item.get("ip") else ""
    return f"node {item.get('cluster')}:{node}{ip}"


async def lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines (without their newline) as they arrive; a last partial line too."""
    pending = b""
    async for chunk in resp.content.iter_any():
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line
    if pending:
        yield pending


def write(stream: BinaryIO, data: bytes) -> None:
    stream.write(data)
    stream.flush()  # a pipe is block-buffered; the point is to see lines as they come


def say(text: str) -> None:
    """A line of our own (not the guest's output) on stdout."""
    write(sys.stdout.buffer, text.encode() + b"\n")
