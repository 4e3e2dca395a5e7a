"""The one error table: every error class has exactly the row meant for it, transient failures
carry Retry-After, and the one renderer writes the problem document for API and proxy alike."""

from __future__ import annotations

import inspect
import json

import pytest

from pxproxy import error_table
from pxproxy.api.problems import ApiError, problem_response
from pxproxy.error_table import ROWS, problem_for
from pxproxy.problems import Problem, render
from pxproxy.pve import errors as pve_errors
from pxproxy.pve import termproxy
from pxproxy.pve.errors import (
    PveAuthError,
    PveConnectionError,
    PveError,
    PveNodeUnreachableError,
    PveNotFoundError,
    PveNotImplementedError,
    PveParameterError,
    PvePermissionError,
    PveProtocolError,
    PveServerError,
    PveTaskFailedError,
    PveTaskTimeoutError,
    PveTimeoutError,
    PveTlsError,
)
from pxproxy.pve.termproxy import (
    ShellBusyError,
    ShellSessionError,
    ShellTimeoutError,
    ShellUnavailableError,
)
from pxproxy.shutdown import DaemonStopping
from pxproxy.wake.contract import WakeError, WakeTimeout
from pxproxy.wake.service import PowerConflict

UPID = "UPID:pve1:0001A2B7:01910043:6B0E8E56:vzstart:104:root@pam:"
DENIED = "Permission check failed (/vms/101, VM.PowerMgmt)"

CASES: list[tuple[BaseException, int, str | None]] = [
    # Down for now: 503 and when to try again, wherever it is met.
    (PveConnectionError("refused"), 503, "5"),
    (PveNodeUnreachableError("no route", status=595), 503, "5"),
    (ShellBusyError("all 4 shells busy"), 503, "5"),
    (WakeError("wiki", "start failed", 2.2), 503, "3"),
    (WakeTimeout("wiki", "not ready", 30), 503, "30"),
    (DaemonStopping(), 503, "5"),
    # Too slow: 504.
    (PveTimeoutError("no answer"), 504, None),
    (ShellTimeoutError("interrupted"), 504, None),
    (PveTaskTimeoutError(UPID, 12.0), 504, None),
    # Proxmox answered, nothing the client can fix: 502.
    (PveTlsError("fingerprint mismatch"), 502, None),
    (PveAuthError("bad token", status=401), 502, None),
    (PvePermissionError(DENIED), 502, None),
    (PveProtocolError("not JSON"), 502, None),
    (ShellSessionError("closed early"), 502, None),
    (PveTaskFailedError(UPID, "command failed"), 502, None),
    (PveError("HTTP 302"), 502, None),
    # The request: 4xx.
    (PveParameterError("bad", errors={"vmid": "out of range"}), 400, None),
    (PveNotFoundError("no such VM", status=404), 404, None),
    (PveNotImplementedError("no such method", status=501), 404, None),
    (PveServerError("CT 101 already running", status=500), 409, None),
    (ShellUnavailableError(), 501, None),
    (PowerConflict("lab:101", "a waking is in flight; stop it once that ends"), 409, None),
]


def test_no_row_is_shadowed_by_an_earlier_one() -> None:
    for i, early in enumerate(ROWS):
        for late in ROWS[i + 1 :]:
            assert not issubclass(late.error, early.error), (late.error, early.error)


def test_every_error_class_has_a_decided_status() -> None:
    """A new error class in pve/ needs a line in CASES: its status is a decision, not whatever
    its base class happens to get."""
    classes = {
        cls
        for module in (pve_errors, termproxy)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, PveError)
    }
    decided = {type(exc) for exc, _, _ in CASES}
    assert classes - decided == set()


@pytest.mark.parametrize(("exc", "status", "retry_after"), CASES)
def test_status_and_retry_after(exc: BaseException, status: int, retry_after: str | None) -> None:
    problem = problem_for(exc)
    assert problem.status == status
    assert problem.headers.get("Retry-After") == retry_after
    assert problem.title
    assert problem.detail


def test_details_name_what_the_caller_knows() -> None:
    unreachable = problem_for(PveConnectionError("refused"), cluster="home")
    assert unreachable.detail == "cannot reach Proxmox of cluster 'home': refused"
    offline = problem_for(PveNodeUnreachableError("no route", status=595), node="pve2")
    assert offline.detail == "node pve2 is offline or unreachable: no route"
    missing = problem_for(PveNotFoundError("gone", status=404), guest="home:101")
    assert missing.detail == "Proxmox does not know home:101: gone"
    lacking = problem_for(PvePermissionError(DENIED))
    assert (lacking.extra["privilege"], lacking.extra["acl_path"]) == ("VM.PowerMgmt", "/vms/101")
    assert problem_for(PveTaskTimeoutError(UPID, 1.0)).extra == {"upid": UPID}
    assert problem_for(PveServerError("locked", status=500)).extra == {"proxmox_status": 500}


def test_wake_answers_keep_their_members_and_are_not_cached() -> None:
    failed = problem_for(WakeError("lab:101", "start failed", 5), guest="wiki", host="w.test")
    assert failed.title == "Guest could not be started"
    assert failed.extra == {"guest": "wiki", "host": "w.test", "error": "wake_failed"}
    assert failed.headers["Cache-Control"] == "no-store"
    timeout = problem_for(WakeTimeout("lab:101", "not ready", 5), guest="wiki", host="w.test")
    assert (timeout.title, timeout.extra["error"]) == ("Guest not ready", "wake_timeout")
    stopping = problem_for(DaemonStopping(), guest="wiki")
    assert stopping.detail == "pxproxy is stopping; try again shortly"
    assert stopping.extra == {"guest": "wiki"}


def test_an_unknown_error_is_500_and_a_problem_is_its_own_answer() -> None:
    unknown = problem_for(RuntimeError("bug"))
    assert (unknown.status, unknown.detail) == (500, "see the daemon log")
    own = Problem(418, "Teapot", "short and stout")
    assert problem_for(own) is own


async def test_one_renderer_for_api_and_proxy() -> None:
    # The API's names are the shared pair, not copies.
    assert ApiError is Problem
    assert problem_response is render
    exc = problem_for(ShellBusyError("busy"))
    response = render(exc, {"X-Extra": "1"})
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert (response.headers["Retry-After"], response.headers["X-Extra"]) == ("5", "1")
    assert response.text is not None
    assert json.loads(response.text) == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "busy",
    }


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [error_table.retry_after(s) for s in (0, 0.2, 1, 2.5, 30)] == ["1", "1", "1", "3", "30"]
