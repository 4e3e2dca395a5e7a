"""What a request meets while its guest is not ready: loading page, progress events, 503s.

Health checks (monitoring) are recognised here too: they must never wake a guest or keep one
awake, so they only learn whether it is up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json

from aiohttp import web

from ..config.models import HealthCheckRules
from ..error_table import problem_for
from ..listeners.server_header import SERVER_NAME
from ..problems import render
from ..shutdown import DaemonStopping, Stopping
from ..wake.contract import Gate, WakeError, WakeProgress, WakeState
from . import loading_page

INTERNAL_PREFIX = "/.pxproxy/"
# How soon a browser that ignores the page's script should try again.
LOADING_RETRY_AFTER_S = 5
_MAX_SOURCE_CACHE = 4096


class HealthChecks:
    """Matches requests against `proxy.health_checks`; any rule is enough."""

    def __init__(self, rules: HealthCheckRules) -> None:
        self._agents = tuple(a.lower() for a in rules.user_agents if a)
        self._exact = frozenset(p for p in rules.paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in rules.paths if p.endswith("*"))
        self._networks = tuple(ipaddress.ip_network(s, strict=False) for s in rules.sources)
        self._sources: dict[str, bool] = {}

    def matches(self, *, user_agent: str | None, path: str, peer: str | None) -> bool:
        if user_agent and self._agents:
            lowered = user_agent.lower()
            if any(agent in lowered for agent in self._agents):
                return True
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            return True
        return bool(self._networks) and peer is not None and self._from_source(peer)

    def _from_source(self, peer: str) -> bool:
        known = self._sources.get(peer)
        if known is None:
            try:
                address = ipaddress.ip_address(peer.split("%", 1)[0])
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self._networks)
            if len(self._sources) >= _MAX_SOURCE_CACHE:
                self._sources.clear()
            self._sources[peer] = known
        return known


def wants_html(request: web.BaseRequest) -> bool:
    """A browser navigating: it can show a page, so it gets one instead of waiting blind."""
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def wake_failed(exc: WakeError, *, guest: str, host: str) -> web.Response:
    return render(problem_for(exc, guest=guest, host=host))


def loading(*, name: str, host: str, gate: Gate) -> web.Response:
    """The page, at once: status 503 so nothing caches or indexes it as the site."""
    state = gate.state
    failed = state is WakeState.FAILED
    text = loading_page.render(
        name=name,
        host=host,
        state=state.value,
        step="the guest could not be started" if failed else "starting",
        error=None,
    )
    return web.Response(
        status=503,
        text=text,
        content_type="text/html",
        headers={
            "Retry-After": str(LOADING_RETRY_AFTER_S),
            "Cache-Control": "no-store",
        },
    )


def _event(progress: WakeProgress) -> bytes:
    data = json.dumps(
        {"state": progress.state.value, "step": progress.step, "error": progress.error}
    )
    return f"data: {data}\n\n".encode()


async def wake_events(
    request: web.BaseRequest, gate: Gate, stopping: Stopping
) -> web.StreamResponse:
    """Server-Sent Events of the wake's progress, ending when the guest is ready or failed,
    or when pxproxy stops (the page reconnects to the next instance).
    Watching never wakes anything: the wake was started when the page was served."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # nginx and friends in front of us must not buffer the stream.
            "X-Accel-Buffering": "no",
            "Server": SERVER_NAME,
        }
    )
    await resp.prepare(request)
    await resp.write(b"retry: 2000\n\n")
    with contextlib.suppress(DaemonStopping):
        await stopping.race(_relay_progress(resp, gate))
    await resp.write_eof()
    return resp


async def _relay_progress(resp: web.StreamResponse, gate: Gate) -> None:
    async for progress in gate.progress():
        await resp.write(_event(progress))
        if progress.state in (WakeState.READY, WakeState.FAILED):
            return


def stopping_problem(*, guest: str | None = None, host: str | None = None) -> web.Response:
    """A request that was still waiting for its guest when pxproxy began to stop."""
    response = render(problem_for(DaemonStopping(), guest=guest, host=host))
    response.force_close()
    return response
