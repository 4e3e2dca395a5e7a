from __future__ import annotations

import pytest

from pxproxy.pve.errors import (
    PveAuthError,
    PveConnectionError,
    PveError,
    PveNodeUnreachableError,
    PveNotFoundError,
    PveNotImplementedError,
    PveParameterError,
    PvePermissionError,
    PveServerError,
    PveTaskFailedError,
    PveTaskTimeoutError,
    PveTimeoutError,
    PveTlsError,
    error_for_status,
)

PATH = "/nodes/pve/qemu/100/status/start"


def test_400_keeps_each_field_error() -> None:
    err = error_for_status(
        400,
        "Parameter verification failed.",
        PATH,
        {"vmid": "invalid format - value does not look like a valid VM ID\n", "node": "bad"},
    )
    assert isinstance(err, PveParameterError)
    assert err.status == 400
    assert err.errors == {
        "vmid": "invalid format - value does not look like a valid VM ID",
        "node": "bad",
    }
    text = str(err)
    assert text.startswith("HTTP 400: Parameter verification failed.")
    assert f"({PATH})" in text
    assert "node: bad; vmid: invalid format" in text


@pytest.mark.parametrize("errors", [None, "not a dict", ["a"]])
def test_400_without_field_map(errors: object) -> None:
    err = error_for_status(400, "Parameter verification failed.", PATH, errors)
    assert isinstance(err, PveParameterError)
    assert err.errors == {}
    assert str(err) == f"HTTP 400: Parameter verification failed. ({PATH})"


def test_400_field_map_is_copied() -> None:
    fields = {"a": "x"}
    err = PveParameterError("bad", errors=fields)
    fields["b"] = "y"
    assert err.errors == {"a": "x"}


@pytest.mark.parametrize(
    "message",
    ["authentication failure", "No ticket", "Permission denied - invalid csrf token"],
)
def test_401_is_auth(message: str) -> None:
    err = error_for_status(401, message, PATH)
    assert type(err) is PveAuthError
    assert err.status == 401
    assert err.message == message
    assert err.path == PATH


def test_403_parses_privilege_and_acl_path() -> None:
    err = error_for_status(403, "Permission check failed (/vms/100, VM.PowerMgmt)", PATH)
    assert isinstance(err, PvePermissionError)
    assert err.status == 403
    assert err.acl_path == "/vms/100"
    assert err.privilege == "VM.PowerMgmt"


def test_403_with_alternative_privileges() -> None:
    err = error_for_status(403, "Permission check failed (/, Sys.Audit|Sys.Modify)", PATH)
    assert isinstance(err, PvePermissionError)
    assert err.acl_path == "/"
    assert err.privilege == "Sys.Audit|Sys.Modify"


@pytest.mark.parametrize(
    "message",
    ["Permission check failed (user != root@pam)", "forbidden", ""],
)
def test_403_without_parsable_detail(message: str) -> None:
    err = error_for_status(403, message, PATH)
    assert isinstance(err, PvePermissionError)
    assert err.acl_path is None
    assert err.privilege is None


def test_404_is_not_found() -> None:
    err = error_for_status(404, "Not Found", PATH)
    assert type(err) is PveNotFoundError
    assert err.status == 404


@pytest.mark.parametrize(
    "message",
    [
        "Configuration file 'nodes/pve/qemu-server/100.conf' does not exist",
        "no such VM ('100')",
        "unable to find configuration file for VM 100 on node 'pve'",
        "Node 'x' not found",
    ],
)
def test_500_not_found_messages(message: str) -> None:
    err = error_for_status(500, message, PATH)
    assert type(err) is PveNotFoundError
    assert err.status == 500
    assert err.message == message


@pytest.mark.parametrize(
    "message",
    [
        "CT 101 already running",
        "VM 100 is not running",
        "No QEMU guest agent configured",
        "QEMU guest agent is not running",
    ],
)
def test_500_other_is_server_error(message: str) -> None:
    err = error_for_status(500, message, PATH)
    assert type(err) is PveServerError
    assert err.status == 500
    assert str(err) == f"HTTP 500: {message} ({PATH})"


def test_501_is_not_implemented_and_a_kind_of_not_found() -> None:
    err = error_for_status(501, "Method 'GET /nodes/pve/lxc/101/interfaces' not implemented", PATH)
    assert type(err) is PveNotImplementedError
    assert isinstance(err, PveNotFoundError)
    assert err.status == 501


@pytest.mark.parametrize("status", [595, 596])
def test_595_596_node_unreachable(status: int) -> None:
    err = error_for_status(status, "No route to host", PATH)
    assert type(err) is PveNodeUnreachableError
    assert err.status == status
    assert "No route to host" in str(err)


@pytest.mark.parametrize("status", [502, 503])
def test_other_5xx_server_error(status: int) -> None:
    assert type(error_for_status(status, "Bad Gateway", PATH)) is PveServerError


@pytest.mark.parametrize("status", [302, 409, 418])
def test_unmapped_status_is_generic(status: int) -> None:
    err = error_for_status(status, "odd", PATH)
    assert type(err) is PveError
    assert err.status == status


def test_hierarchy() -> None:
    for connection_error in (PveTlsError, PveTimeoutError):
        assert issubclass(connection_error, PveConnectionError)
    for cls in (
        PveConnectionError,
        PveAuthError,
        PvePermissionError,
        PveNotFoundError,
        PveNodeUnreachableError,
        PveParameterError,
        PveServerError,
        PveTaskFailedError,
        PveTaskTimeoutError,
    ):
        assert issubclass(cls, PveError)


def test_str_without_status_or_path() -> None:
    assert str(PveConnectionError("connection refused")) == "connection refused"


def test_task_errors_carry_upid() -> None:
    upid = "UPID:pve:000FF1FD:10F9374C:630D702C:qmstart:100:root@pam:"
    failed = PveTaskFailedError(upid, "VM 100 already running")
    assert failed.upid == upid
    assert failed.exitstatus == "VM 100 already running"
    assert str(failed) == f"task {upid} failed: VM 100 already running"
    timeout = PveTaskTimeoutError(upid, 12.34)
    assert timeout.upid == upid
    assert str(timeout) == f"task {upid} still running after 12.3s"
