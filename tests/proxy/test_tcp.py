"""TCP routes end to end: real sockets through TcpProxy to the lab guests' TCP echo servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from pxproxy.config.models import RouteConfig
from pxproxy.inventory.snapshot import ClusterSnapshot
from pxproxy.inventory.store import Inventory
from pxproxy.lab.server import LabServer
from pxproxy.lab.state import LabGuest
from pxproxy.proxy.tcp import TcpProxy
from pxproxy.wake.contract import (
    AlwaysReady,
    Gate,
    WakeError,
    WakeProgress,
    WakeState,
    WakeTimeout,
)

from ..builders import make_guest
from ..support import wait_for

VMID = 9104
OTHER_VMID = 9106
GAME_PORT = 25565
DEADLINE_S = 10.0

MakeProxy = Callable[..., Awaitable[tuple[TcpProxy, tuple[str, int]]]]


class SleepyGate:
    """A gate whose guest sleeps until `wake()`; counts what the proxy asks of it."""

    wake_timeout_s = 5.0

    def __init__(self, error: WakeError | None = None) -> None:
        self.state = WakeState.ASLEEP
        self.error = error
        self.ready_calls = 0
        self.activities = 0
        self.holds = 0
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self.state = WakeState.READY
        self._woken.set()

    async def ready(self, *, wake: bool = True) -> None:
        self.ready_calls += 1
        if self.error is not None:
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


class Recorder:
    """TcpHooks that remembers everything."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.to_guest = 0
        self.to_client = 0

    def connection_opened(self, route: str) -> None:
        self.opened.append(route)

    def connection_closed(self, route: str) -> None:
        self.closed.append(route)

    def tcp_bytes(self, route: str, to_guest: int, to_client: int) -> None:
        self.to_guest += to_guest
        self.to_client += to_client


async def start_game_guest(lab: LabServer, vmid: int, name: str) -> LabGuest:
    guest = lab.cluster.add_guest(
        vmid, "lxc", name, ports=(), tcp_ports=(GAME_PORT,), boot_time_s=0.05
    )
    task = await lab.cluster.start(vmid).wait()
    assert task.exitstatus == "OK"
    await wait_for(lambda: accepts(guest.ip, GAME_PORT), DEADLINE_S, f"{name} to listen")
    return guest


async def accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def publish(inventory: Inventory, *guests: tuple[int, str, tuple[str, ...]]) -> None:
    inventory.publish(
        ClusterSnapshot.build(
            "lab",
            [make_guest(vmid, name, cluster="lab", ips=ips) for vmid, name, ips in guests],
            [],
        )
    )


@pytest.fixture
async def game(lab_server: LabServer) -> LabGuest:
    return await start_game_guest(lab_server, VMID, "mc")


@pytest.fixture
def inventory(game: LabGuest) -> Inventory:
    inv = Inventory()
    publish(inv, (VMID, "mc", (game.ip,)))
    return inv


@pytest.fixture
async def make_proxy(inventory: Inventory) -> AsyncIterator[MakeProxy]:
    proxies: list[TcpProxy] = []

    async def make(
        gate: Gate | None = None,
        *,
        guest: str = "mc",
        port: int = GAME_PORT,
        hooks: Recorder | None = None,
    ) -> tuple[TcpProxy, tuple[str, int]]:
        route = RouteConfig(listen="127.0.0.1:0", guest=guest, port=port)
        the_gate: Gate = gate if gate is not None else AlwaysReady()
        proxy = TcpProxy(
            inventory, lambda _: the_gate, routes=[route], connect_timeout_s=2.0, hooks=hooks
        )
        proxies.append(proxy)
        await proxy.start()
        return proxy, proxy.bound_addresses()["127.0.0.1:0"]

    try:
        yield make
    finally:
        for proxy in proxies:
            await proxy.close()


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(DEADLINE_S):
        return await reader.read()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the peer closed (EOF or reset) without sending anything."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            data = await reader.read()
    except ConnectionResetError:
        return True
    return data == b""


async def roundtrip(address: tuple[str, int], payload: bytes) -> bytes:
    """Send payload while reading (the relay is bounded, so both must run), half-close, read
    everything the guest echoes until it closes."""
    reader, writer = await asyncio.open_connection(*address)

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    try:
        sender = asyncio.create_task(send())
        received = await read_to_eof(reader)
        await sender
        return received
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def relay_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("tcp-relay")]


async def test_large_payload_is_echoed_exactly(game: LabGuest, make_proxy: MakeProxy) -> None:
    hooks = Recorder()
    _, address = await make_proxy(hooks=hooks)
    payload = os.urandom(8 * 1024 * 1024 + 17)
    netin_before = game.netin

    assert await roundtrip(address, payload) == payload

    # The bytes really crossed to the guest, and the hooks saw the whole connection.
    assert game.netin - netin_before == len(payload)
    await wait_for(lambda: len(hooks.closed) == 1, DEADLINE_S, "the connection to be reported")
    assert hooks.opened == hooks.closed == ["tcp:127.0.0.1:0"]
    assert hooks.to_guest == hooks.to_client == len(payload)


async def test_many_concurrent_connections(make_proxy: MakeProxy) -> None:
    proxy, address = await make_proxy()
    payloads = [f"player {i} ".encode() * (i + 1) for i in range(100)]

    echoed = await asyncio.gather(*(roundtrip(address, p) for p in payloads))

    assert echoed == payloads
    await wait_for(lambda: proxy.active_connections == 0, DEADLINE_S, "relays to finish")


async def test_half_close_from_the_guest_keeps_the_client_direction_open(
    inventory: Inventory, make_proxy: MakeProxy
) -> None:
    """The guest says hello and half-closes; the client still gets to send its part."""
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.write_eof()
        got.set_result(await reader.read())
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        publish(inventory, (VMID, "mc", ("127.0.0.1",)))
        _, address = await make_proxy(port=port)
        reader, writer = await asyncio.open_connection(*address)

        assert await read_to_eof(reader) == b"hello"  # the guest's EOF reached the client
        writer.write(b"still talking")
        await writer.drain()
        writer.write_eof()

        async with asyncio.timeout(DEADLINE_S):
            assert await got == b"still talking"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_that_does_not_read_stalls_the_guest_not_memory(
    inventory: Inventory, make_proxy: MakeProxy
) -> None:
    """Backpressure: a guest streaming to a client that reads nothing is soon blocked in its
    own drain(); the proxy does not soak up the stream."""
    total = 256 * 1024 * 1024
    sent = 0
    chunk = b"z" * 65536
    guest: list[asyncio.StreamWriter] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        guest.append(writer)
        with contextlib.suppress(OSError):
            while sent < total:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    try:
        publish(inventory, (VMID, "mc", ("127.0.0.1",)))
        _, address = await make_proxy(port=server.sockets[0].getsockname()[1])
        reader, writer = await asyncio.open_connection(*address)

        def blocked() -> bool:
            # The guest's own transport holds more than its high-water mark: its drain() waits
            # for the proxy to read, and nothing moves until the client reads.
            if not guest:
                return False
            transport = guest[0].transport
            return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

        await wait_for(blocked, DEADLINE_S, "the guest to be blocked in drain()")
        assert sent > 0
        # Only socket buffers and the relay's bounded chunks hold the difference.
        assert sent < 64 * 1024 * 1024

        received = 0
        async with asyncio.timeout(60):
            while data := await reader.read(1024 * 1024):
                received += len(data)
        assert received == total
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_sleeping_guest_holds_connections_until_ready(
    game: LabGuest, make_proxy: MakeProxy
) -> None:
    gate = SleepyGate()
    _, address = await make_proxy(gate)
    netin_before = game.netin
    clients = [await asyncio.open_connection(*address) for _ in range(3)]
    for i, (_, writer) in enumerate(clients):
        writer.write(f"join {i}".encode())
        await writer.drain()

    await wait_for(lambda: gate.ready_calls == 3, DEADLINE_S, "every connection to ask")
    assert gate.holds == 3  # each held connection keeps the guest busy
    assert game.netin == netin_before  # nothing relayed while the guest sleeps

    gate.wake()
    for i, (reader, writer) in enumerate(clients):
        expected = f"join {i}".encode()
        async with asyncio.timeout(DEADLINE_S):
            assert await reader.readexactly(len(expected)) == expected
        writer.close()

    await wait_for(lambda: gate.holds == 0, DEADLINE_S, "the holds to be released")
    assert gate.ready_calls == 3  # once per connection, not per chunk
    assert gate.activities >= 3


@pytest.mark.parametrize(
    "error",
    [
        WakeError("mc", "start failed: no space left on device", 30.0),
        WakeTimeout("mc", "still starting after 5s", 5.0),
    ],
    ids=["failed", "timeout"],
)
async def test_failed_wake_closes_the_client_with_a_log_line(
    game: LabGuest,
    make_proxy: MakeProxy,
    caplog: pytest.LogCaptureFixture,
    error: WakeError,
) -> None:
    gate = SleepyGate(error)
    _, address = await make_proxy(gate)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"hello?")

    assert await closed_by_peer(reader)
    writer.close()

    await wait_for(lambda: gate.holds == 0, DEADLINE_S, "the hold to be released")
    assert game.netin == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "pxproxy.proxy.tcp"]
    assert len(lines) == 1
    assert "127.0.0.1:0" in lines[0]
    assert "mc:25565" in lines[0]
    assert error.message in lines[0]


@pytest.mark.parametrize(
    ("published", "why"),
    [
        ((VMID, "mc", ()), "has no IP address yet"),
        ((VMID, "other", ("127.0.0.2",)), "guest 'mc' is not in the inventory"),
    ],
    ids=["no-address", "unknown-guest"],
)
async def test_unresolvable_guest_closes_the_client(
    inventory: Inventory,
    make_proxy: MakeProxy,
    caplog: pytest.LogCaptureFixture,
    published: tuple[int, str, tuple[str, ...]],
    why: str,
) -> None:
    publish(inventory, published)
    hooks = Recorder()
    _, address = await make_proxy(hooks=hooks)
    reader, writer = await asyncio.open_connection(*address)

    assert await closed_by_peer(reader)
    writer.close()

    await wait_for(lambda: len(hooks.closed) == 1, DEADLINE_S, "the connection to end")
    assert any(why in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


async def test_an_ambiguous_guest_is_refused_even_when_only_one_runs(
    inventory: Inventory, make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The rename hijack on the TCP side: a second guest named like the route's, in another
    cluster, must not get the route's traffic because it is the one that runs."""
    inventory.publish(
        ClusterSnapshot.build(
            "lab", [make_guest(VMID, "mc", cluster="lab", status="stopped", ips=())], []
        )
    )
    inventory.publish(
        ClusterSnapshot.build(
            "other", [make_guest(VMID + 1, "mc", cluster="other", ips=("127.0.0.1",))], []
        )
    )
    hooks = Recorder()
    _, address = await make_proxy(hooks=hooks)
    reader, writer = await asyncio.open_connection(*address)
    assert await closed_by_peer(reader)
    writer.close()
    await wait_for(lambda: len(hooks.closed) == 1, DEADLINE_S, "the connection to end")
    assert any("is ambiguous" in r.getMessage() for r in caplog.records)


async def test_nothing_listening_on_the_guest_closes_the_client(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    _, address = await make_proxy(port=GAME_PORT + 1)  # the guest serves only GAME_PORT
    reader, writer = await asyncio.open_connection(*address)

    assert await closed_by_peer(reader)
    writer.close()
    await wait_for(
        lambda: any("cannot connect" in r.getMessage() for r in caplog.records),
        DEADLINE_S,
        "the log line",
    )


async def test_new_connections_follow_the_guest_to_its_new_address(
    lab_server: LabServer, inventory: Inventory, game: LabGuest, make_proxy: MakeProxy
) -> None:
    other = await start_game_guest(lab_server, OTHER_VMID, "mc2")
    _, address = await make_proxy()
    assert await roundtrip(address, b"before") == b"before"
    assert (game.netin, other.netin) == (6, 0)

    # DHCP moved "mc": the next connection goes where the live snapshot says, no reload.
    publish(inventory, (VMID, "mc", (other.ip,)))
    assert await roundtrip(address, b"after!") == b"after!"
    assert (game.netin, other.netin) == (6, 6)


async def test_close_ends_relays_and_stops_listening(make_proxy: MakeProxy) -> None:
    gate = SleepyGate()
    proxy, address = await make_proxy(gate)
    gate.wake()
    relayed = await asyncio.open_connection(*address)
    waiting_gate_proxy, waiting_address = await make_proxy(SleepyGate())
    waiting = await asyncio.open_connection(*waiting_address)

    relayed[1].write(b"ping")
    async with asyncio.timeout(DEADLINE_S):
        assert await relayed[0].readexactly(4) == b"ping"
    await wait_for(lambda: waiting_gate_proxy.active_connections == 1, DEADLINE_S, "waiting")

    await proxy.close()
    await waiting_gate_proxy.close()

    assert relay_tasks() == []
    assert proxy.active_connections == waiting_gate_proxy.active_connections == 0
    assert gate.holds == 0
    for reader, writer in (relayed, waiting):
        assert await closed_by_peer(reader)
        writer.close()
    for host, port in (address, waiting_address):
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, port)


async def test_close_with_grace_lets_open_relays_finish_and_refuses_new_ones(
    make_proxy: MakeProxy,
) -> None:
    gate = SleepyGate()
    proxy, address = await make_proxy(gate)
    gate.wake()
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"ping")
    async with asyncio.timeout(DEADLINE_S):
        assert await reader.readexactly(4) == b"ping"

    closing = asyncio.create_task(proxy.close(grace_s=60))
    # Listening stops at once; the open relay still carries bytes during the grace.
    await wait_for(lambda: proxy.bound_addresses() == {}, DEADLINE_S, "the listener to close")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*address)
    writer.write(b"more")
    async with asyncio.timeout(DEADLINE_S):
        assert await reader.readexactly(4) == b"more"
    assert not closing.done()
    # The client ends its connection: close() returns without waiting out the grace.
    writer.close()
    async with asyncio.timeout(DEADLINE_S):
        await closing
    assert relay_tasks() == []
