"""UDP clients and gates for the UDP route tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import cast

from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.wake.contract import WakeError, WakeProgress, WakeState

DEADLINE_S = 10.0


class UdpClient(asyncio.DatagramProtocol):
    """A game client: one socket (one client address), what it receives, in order."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.errors: list[Exception] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not a DatagramTransport subclass on every loop, but its interface.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def receive(self, count: int = 1) -> list[bytes]:
        async with asyncio.timeout(DEADLINE_S):
            return [await self.received.get() for _ in range(count)]

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        name = self.transport.get_extra_info("sockname")
        return str(name[0]), int(name[1])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@contextlib.asynccontextmanager
async def clients(address: tuple[str, int], count: int = 1) -> AsyncIterator[list[UdpClient]]:
    loop = asyncio.get_running_loop()
    made: list[UdpClient] = []
    try:
        for _ in range(count):
            _, client = await loop.create_datagram_endpoint(UdpClient, remote_addr=address)
            made.append(client)
        yield made
    finally:
        for client in made:
            client.close()


async def start_udp_guest(lab: LabServer, vmid: int, name: str, port: int) -> LabGuest:
    """A running lab guest with a UDP echo on `port` (and nothing else)."""
    guest = lab.cluster.add_guest(vmid, "lxc", name, ports=(), udp_ports=(port,), boot_time_s=0.05)
    task = await lab.cluster.start(vmid).wait()
    assert task.exitstatus == "OK"
    return guest


class SleepyGate:
    """A gate whose guest sleeps until `wake()`; counts what the proxy asks of it."""

    wake_timeout_s = 5.0

    def __init__(self, error: WakeError | None = None, *, ready: bool = False) -> None:
        self.state = WakeState.READY if ready else WakeState.ASLEEP
        self.error = error
        self.ready_calls = 0
        self.activities = 0
        self.holds = 0
        self._woken = asyncio.Event()
        if ready:
            self._woken.set()

    def wake(self) -> None:
        self.state = WakeState.READY
        self._woken.set()

    def sleep(self) -> None:
        self.state = WakeState.ASLEEP
        self._woken = asyncio.Event()

    async def ready(self, *, wake: bool = True) -> None:
        self.ready_calls += 1
        if self.error is not None:
            self.state = WakeState.FAILED
            raise self.error
        await self._woken.wait()

    def activity(self) -> None:
        self.activities += 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.holds += 1
        try:
            yield
        finally:
            self.holds -= 1

    async def progress(self) -> AsyncIterator[WakeProgress]:
        yield WakeProgress(self.state, str(self.state))
