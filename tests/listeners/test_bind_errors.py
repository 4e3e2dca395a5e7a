from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from pxproxy.listeners.bind_errors import ListenError, listening


@pytest.mark.parametrize(
    ("error", "address", "reason"),
    [
        (
            OSError(errno.EADDRINUSE, "Address already in use"),
            "127.0.0.1:8080",
            "address already in use (another process, or another pxproxy, listens there)",
        ),
        (
            OSError(errno.EACCES, "Permission denied"),
            "0.0.0.0:80",
            "permission denied: ports up to 1023 need root or CAP_NET_BIND_SERVICE "
            "(or choose a port above 1023)",
        ),
        (OSError(errno.EACCES, "Permission denied"), "0.0.0.0:8080", "permission denied"),
        (
            OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"),
            "[fd00::1]:8080",
            "cannot assign the address: no interface of this host has it",
        ),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "nowhere.invalid:80",
            "cannot resolve the host (Name or service not known)",
        ),
        (OSError(errno.EMFILE, "Too many open files"), "127.0.0.1:1", "too many open files"),
    ],
)
def test_reasons(error: OSError, address: str, reason: str) -> None:
    found = ListenError("listen.proxy", address, error)
    assert str(found) == f"listen.proxy {address}: {reason}"
    assert found.errno == error.errno


async def test_listening_names_the_key_of_a_real_bind_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def accept(*_: object) -> None:
            return None

        with pytest.raises(ListenError) as info:
            await listening(
                "routes[3].listen",
                f"127.0.0.1:{port}",
                asyncio.start_server(accept, "127.0.0.1", port),
            )
    assert info.value.key == "routes[3].listen"
    assert info.value.errno == errno.EADDRINUSE
    assert isinstance(info.value.__cause__, OSError)
