"""A listener that cannot open its socket, named by its config key: an operator's mistake."""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

PRIVILEGED_PORT_MAX = 1023

_REASONS = {
    errno.EADDRINUSE: "address already in use (another process, or another pxproxy, listens there)",
    errno.EADDRNOTAVAIL: "cannot assign the address: no interface of this host has it",
}


class ListenError(Exception):
    """`key` (e.g. listen.proxy) could not listen on `address`; str() is one line for people."""

    def __init__(self, key: str, address: str, error: OSError) -> None:
        super().__init__(key, address, error.errno)
        self.key = key
        self.address = address
        self.errno = error.errno
        self.reason = _reason(address, error)

    def __str__(self) -> str:
        return f"{self.key} {self.address}: {self.reason}"


def _reason(address: str, error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host ({error.strerror or error})"
    if error.errno in _REASONS:
        return _REASONS[error.errno]
    if error.errno == errno.EACCES:
        port = address.rpartition(":")[2]
        if port.isdigit() and 0 < int(port) <= PRIVILEGED_PORT_MAX:
            return (
                "permission denied: ports up to 1023 need root or CAP_NET_BIND_SERVICE "
                "(or choose a port above 1023)"
            )
        return "permission denied"
    return (error.strerror or str(error)).lower()


async def listening(key: str, address: str, opening: Awaitable[T]) -> T:
    """Await a listener's start, turning a socket error into a ListenError naming `key`."""
    try:
        return await opening
    except OSError as exc:
        raise ListenError(key, address, exc) from exc
