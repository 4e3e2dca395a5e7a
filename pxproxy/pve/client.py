"""Async Proxmox VE API client: auth, retries, timeouts and typed errors.

Knows Proxmox and nothing of routes, idling or HTTP answers of our own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp

from ..config.models import ClusterConfig
from .errors import (
    PveAuthError,
    PveConnectionError,
    PveError,
    PveProtocolError,
    PveTaskTimeoutError,
    PveTimeoutError,
    PveTlsError,
    error_for_status,
)
from .models import (
    AgentExecStatus,
    ClusterStatus,
    GuestStatus,
    JournalPage,
    NodeStatus,
    TaskStatus,
    TermproxyTicket,
    parse_agent_exec_status,
    parse_cluster_status,
    parse_guest_status,
    parse_journal_page,
    parse_node_status,
    parse_task_status,
    parse_termproxy,
)
from .tls import ssl_setting
from .upid import parse_upid

log = logging.getLogger(__name__)

GuestType = Literal["lxc", "qemu"]
ParamValue = str | int | float
# A sequence of pairs repeats a key (`service=a&service=b`), which a mapping cannot.
Params = Mapping[str, ParamValue] | Sequence[tuple[str, ParamValue]]

# PVE tickets live 2 h; renew well before, as the web UI does.
TICKET_RENEW_AFTER_S = 3600.0
TASK_POLL_START_S = 0.1
TASK_POLL_MAX_S = 1.0


@dataclass(slots=True)
class _Ticket:
    ticket: str
    csrf: str
    obtained_at: float


class PveClient:
    """One Proxmox API endpoint with one set of credentials.

    With an API token configured, every call uses the token. Otherwise a password ticket is
    obtained, renewed after an hour, and re-obtained once after a 401.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        *,
        connection_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        use_ticket: bool | None = None,
    ) -> None:
        self._cfg = cluster
        self._base = cluster.url + "/api2/json"
        self._clock = clock
        self._use_ticket = cluster.token_id is None if use_ticket is None else use_ticket
        if self._use_ticket and cluster.username is None:
            raise ValueError("ticket auth needs username and password")
        self._ticket: _Ticket | None = None
        self._login_lock = asyncio.Lock()
        self._ssl = ssl_setting(cluster.tls)
        self._limit = connection_limit or cluster.resolve_concurrency + 4
        self._session: aiohttp.ClientSession | None = None
        self.requests_sent = 0

    @property
    def url(self) -> str:
        return self._cfg.url

    @property
    def uses_ticket(self) -> bool:
        return self._use_ticket

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout),
                # PVE sets no cookies we need; keep the jar from ever sending stale ones.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> PveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ auth

    async def _auth_headers(self, method: str) -> dict[str, str]:
        if not self._use_ticket:
            assert self._cfg.token_id is not None
            assert self._cfg.secret is not None
            secret = self._cfg.secret.get_secret_value()
            return {"Authorization": f"PVEAPIToken={self._cfg.token_id}={secret}"}
        ticket = await self._valid_ticket()
        headers = {"Cookie": f"PVEAuthCookie={ticket.ticket}"}
        if method not in ("GET", "HEAD"):
            headers["CSRFPreventionToken"] = ticket.csrf
        return headers

    async def _valid_ticket(self) -> _Ticket:
        current = self._ticket
        if current is not None and self._clock() - current.obtained_at < TICKET_RENEW_AFTER_S:
            return current
        async with self._login_lock:
            current = self._ticket
            if current is not None and self._clock() - current.obtained_at < TICKET_RENEW_AFTER_S:
                return current
            if current is not None:
                try:
                    self._ticket = await self._login(current.ticket)
                    return self._ticket
                except PveAuthError:
                    log.info("ticket renewal refused by %s; logging in again", self.url)
            assert self._cfg.password is not None
            self._ticket = await self._login(self._cfg.password.get_secret_value())
            return self._ticket

    async def _login(self, password: str) -> _Ticket:
        """POST /access/ticket; `password` may be the current ticket (renewal)."""
        body = await self._send(
            "POST",
            "/access/ticket",
            {},
            data={"username": self._cfg.username or "", "password": password},
        )
        data = _decode_data(body, "/access/ticket")
        if not isinstance(data, Mapping) or "ticket" not in data:
            raise PveProtocolError("login answer has no ticket", path="/access/ticket")
        if data.get("NeedTFA"):
            raise PveAuthError(
                "the account needs two-factor authentication; use an API token or a "
                "user without TFA",
                status=401,
                path="/access/ticket",
            )
        return _Ticket(str(data["ticket"]), str(data.get("CSRFPreventionToken", "")), self._clock())

    def invalidate_ticket(self) -> None:
        self._ticket = None

    async def shell_credentials(self) -> tuple[str, str, str]:
        """(username, ticket, csrf) of a password ticket, for termproxy websockets."""
        ticket = await self._valid_ticket()
        return self._cfg.username or "", ticket.ticket, ticket.csrf

    # --------------------------------------------------------------- requests

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        data: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Call the API and return its `data`."""
        body = await self._with_retries(method, path, params, data, timeout_s)
        return _decode_data(body, path)

    async def _with_retries(
        self,
        method: str,
        path: str,
        params: Params | None,
        data: Mapping[str, Any] | None,
        timeout_s: float | None,
    ) -> bytes:
        """The body of a 200 answer. Retries once after a ticket 401 (the ticket is re-obtained)
        and, for GETs, once after a dropped connection; TLS failures and timeouts are final."""
        auth_retry = self._use_ticket
        conn_retry = method == "GET"
        while True:
            headers = await self._auth_headers(method)
            try:
                return await self._send(method, path, headers, params, data, timeout_s)
            except PveAuthError:
                if not auth_retry:
                    raise
                auth_retry = False
                self.invalidate_ticket()
            except (PveTlsError, PveTimeoutError):
                raise
            except PveConnectionError:
                if not conn_retry:
                    raise
                conn_retry = False

    async def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        params: Params | None = None,
        data: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """One HTTP exchange; a non-200 answer raises its typed error."""
        # Passing timeout=None to aiohttp would disable the session's timeout: always pass one.
        timeout = aiohttp.ClientTimeout(total=timeout_s or self._cfg.timeout)
        self.requests_sent += 1
        try:
            async with self._http().request(
                method,
                self._base + path,
                params=_query(params),
                data=dict(data) if data is not None else None,
                headers=headers,
                timeout=timeout,
            ) as resp:
                body = await resp.read()
                status, reason = resp.status, resp.reason or ""
        except aiohttp.ServerFingerprintMismatch as exc:
            raise PveTlsError(
                f"certificate fingerprint mismatch: expected {exc.expected.hex()}, "
                f"the server presented {exc.got.hex()}",
                path=path,
            ) from None
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            raise PveTlsError(f"TLS failure talking to {self.url}: {exc}", path=path) from None
        except TimeoutError:
            raise PveTimeoutError(
                f"no answer from {self.url} within {timeout_s or self._cfg.timeout:g}s", path=path
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PveConnectionError(
                f"cannot reach {self.url}: {exc or type(exc).__name__}", path=path
            ) from None
        if status != 200:
            raise _error_from(status, reason, body, path)
        return body

    async def get(self, path: str, params: Params | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, data: Mapping[str, Any] | None = None) -> Any:
        return await self.request("POST", path, data=data or {})

    # ------------------------------------------------------------ typed calls

    async def version(self) -> dict[str, Any]:
        data = await self.get("/version")
        return dict(data) if isinstance(data, Mapping) else {}

    async def cluster_status(self) -> ClusterStatus:
        return parse_cluster_status(await self.get("/cluster/status"))

    async def cluster_resources_raw(self, kind: str | None = None) -> bytes:
        """The body of /cluster/resources undecoded, so the inventory parses it once."""
        params = {"type": kind} if kind else None
        return await self._with_retries("GET", "/cluster/resources", params, None, None)

    async def guest_config(self, kind: GuestType, node: str, vmid: int) -> dict[str, Any]:
        data = await self.get(f"/nodes/{_seg(node)}/{kind}/{vmid}/config")
        return dict(data) if isinstance(data, Mapping) else {}

    async def update_guest_config(
        self,
        kind: GuestType,
        node: str,
        vmid: int,
        *,
        delete: Sequence[str] = (),
        digest: str | None = None,
        **fields: str,
    ) -> None:
        """PUT .../config: set `fields` (e.g. description, tags), remove `delete`; with
        `digest`, only if the config is still the one read (else PVE answers 500)."""
        data: dict[str, str] = dict(fields)
        if delete:
            data["delete"] = ",".join(delete)
        if digest is not None:
            data["digest"] = digest
        await self.request("PUT", f"/nodes/{_seg(node)}/{kind}/{vmid}/config", data=data)

    async def lxc_interfaces(self, node: str, vmid: int) -> object:
        return await self.get(f"/nodes/{_seg(node)}/lxc/{vmid}/interfaces")

    async def qemu_agent_interfaces(self, node: str, vmid: int) -> object:
        return await self.get(f"/nodes/{_seg(node)}/qemu/{vmid}/agent/network-get-interfaces")

    async def guest_status(self, kind: GuestType, node: str, vmid: int) -> GuestStatus:
        """`status/current`: unlike /cluster/resources it tells a paused VM (`qmpstatus`)."""
        data = await self.get(f"/nodes/{_seg(node)}/{kind}/{vmid}/status/current")
        return parse_guest_status(data)

    async def node_status(self, node: str) -> NodeStatus:
        return parse_node_status(await self.get(f"/nodes/{_seg(node)}/status"))

    async def node_journal(
        self,
        node: str,
        *,
        lastentries: int | None = None,
        startcursor: str | None = None,
        services: Sequence[str] = (),
    ) -> JournalPage:
        """The last `lastentries` lines, or those after `startcursor`. `services` filters by
        systemd unit natively on PVE 9; older versions answer 400 (PveParameterError naming
        `service`). Works with API tokens (Sys.Syslog)."""
        path = f"/nodes/{_seg(node)}/journal"
        query: list[tuple[str, ParamValue]] = [("service", s) for s in services]
        if lastentries is not None:
            query.append(("lastentries", lastentries))
        if startcursor is not None:
            query.append(("startcursor", startcursor))
        return parse_journal_page(await self.get(path, query), path)

    async def agent_exec(self, node: str, vmid: int, argv: Sequence[str]) -> int:
        """Start argv (no shell) through the QEMU guest agent; returns the agent's pid."""
        path = f"/nodes/{_seg(node)}/qemu/{vmid}/agent/exec"
        # A list value becomes repeated `command=` form fields: PVE's array encoding.
        data = await self.post(path, {"command": list(argv)})
        pid = data.get("pid") if isinstance(data, Mapping) else None
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise PveProtocolError(f"agent/exec answered {data!r}, not a pid", path=path)
        return pid

    async def agent_exec_status(self, node: str, vmid: int, pid: int) -> AgentExecStatus:
        path = f"/nodes/{_seg(node)}/qemu/{vmid}/agent/exec-status"
        return parse_agent_exec_status(await self.get(path, {"pid": pid}))

    async def termproxy(self, node: str) -> TermproxyTicket:
        """POST termproxy for a node shell. Always with the password ticket, even where other
        calls use a token: only a root@pam ticket gets a root shell, and the websocket must
        present the same cookie. Once more with a fresh ticket after a 401."""
        path = f"/nodes/{_seg(node)}/termproxy"
        if self._cfg.username is None or self._cfg.password is None:
            raise PveError("a node shell needs a password ticket (username and password)")
        for attempt in (1, 2):
            ticket = await self._valid_ticket()
            headers = {
                "Cookie": f"PVEAuthCookie={ticket.ticket}",
                "CSRFPreventionToken": ticket.csrf,
            }
            try:
                body = await self._send("POST", path, headers, data={})
            except PveAuthError:
                if attempt == 2:
                    raise
                self.invalidate_ticket()
                continue
            return parse_termproxy(_decode_data(body, path), ticket.ticket, path)
        raise AssertionError("unreachable")  # pragma: no cover

    def websocket_url(self, node: str, port: str, vncticket: str) -> str:
        """The node's vncwebsocket for a termproxy ticket."""
        return (
            f"{self._base}/nodes/{_seg(node)}/vncwebsocket"
            f"?port={quote(port, safe='')}&vncticket={quote(vncticket, safe='')}"
        )

    async def guest_action(
        self, kind: GuestType, node: str, vmid: int, action: str, **params: str | int
    ) -> str:
        """Start a power action; returns its UPID."""
        data = await self.post(f"/nodes/{_seg(node)}/{kind}/{vmid}/status/{action}", params)
        if not isinstance(data, str) or not data.startswith("UPID:"):
            raise PveProtocolError(f"expected a UPID, got {data!r}", path=f"{kind}/{vmid}/{action}")
        return data

    async def task_status(self, upid: str) -> TaskStatus:
        node = parse_upid(upid).node
        data = await self.get(f"/nodes/{_seg(node)}/tasks/{quote(upid, safe='')}/status")
        return parse_task_status(upid, node, data)

    async def wait_task(
        self, upid: str, timeout_s: float, *, poke: asyncio.Event | None = None
    ) -> TaskStatus:
        """Poll a task with backoff until it stops; raises PveTaskTimeoutError past timeout_s.
        The caller decides whether a failed task is an error (`TaskStatus.ok`). Setting `poke`
        asks again at once (a caller that sees the task's effect need not wait the backoff)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        delay = TASK_POLL_START_S
        while True:
            status = await self.task_status(upid)
            if not status.running:
                return status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PveTaskTimeoutError(upid, timeout_s)
            if poke is None:
                await asyncio.sleep(min(delay, remaining))
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poke.wait(), min(delay, remaining))
                poke.clear()
            delay = min(delay * 2, TASK_POLL_MAX_S)


def _query(params: Params | None) -> list[tuple[str, ParamValue]] | None:
    if not params:
        return None
    return list(params.items()) if isinstance(params, Mapping) else list(params)


def _seg(value: str) -> str:
    """A path segment, quoted so a hostile node name cannot change the path."""
    return quote(value, safe="")


def _decode_data(body: bytes, path: str) -> Any:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PveProtocolError("answer is not JSON", status=200, path=path) from None
    if not isinstance(payload, dict):
        raise PveProtocolError("answer is not a JSON object", status=200, path=path)
    return payload.get("data")


def _error_from(status: int, reason: str, body: bytes, path: str) -> PveError:
    """PVE puts its message in the reason phrase and, since 8.3, in the body too."""
    message, errors = reason, None
    try:
        payload = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        payload = None
    if isinstance(payload, dict):
        if isinstance(payload.get("message"), str) and payload["message"].strip():
            message = payload["message"].strip()
        errors = payload.get("errors")
    return error_for_status(status, message or f"HTTP {status}", path, errors)
