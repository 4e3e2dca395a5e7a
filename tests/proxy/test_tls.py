"""TLS on the proxy listener (pxproxy/proxy/tls.py): real handshakes on loopback, on the
standard event loop and on uvloop (the daemon's loop), against certificates a test CA signs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import uvloop

from pxproxy.config.listener_tls import CertificateFiles, ProxyTlsConfig
from pxproxy.proxy.tls import ALPN_PROTOCOLS, ServerCertificates, TlsError, wildcard_parent

from ..certificates import DAY, NOW, TestCa

HOST = "127.0.0.1"
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


@pytest.fixture(params=["asyncio", "uvloop"])
def runner(request: pytest.FixtureRequest) -> Iterator[asyncio.Runner]:
    """Each listener test runs on both loops: the daemon's is uvloop when it is installed."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as run:
        run.run(_expect_loop(request.param))
        yield run


async def _expect_loop(kind: str) -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (kind == "uvloop")


@dataclass
class Site:
    """Three certificates on disk, the first the default."""

    directory: Path
    files: dict[str, CertificateFiles]
    serials: dict[str, int]

    def config(self, *stems: str, min_version: str = "1.2") -> ProxyTlsConfig:
        stems = stems or ("default", "wiki", "apps")
        return ProxyTlsConfig(
            certificates=tuple(self.files[s] for s in stems),
            min_version=min_version,
        )


@pytest.fixture
def site(ca: TestCa, tmp_path: Path) -> Site:
    files: dict[str, CertificateFiles] = {}
    serials: dict[str, int] = {}
    for stem, names in {
        "default": ("default.test",),
        "wiki": ("wiki.t.test",),
        "apps": ("*.apps.t.test",),
    }.items():
        leaf = ca.issue(*names)
        files[stem] = leaf.write(tmp_path, stem)
        serials[stem] = leaf.serial
    return Site(tmp_path, files, serials)


class _Report(asyncio.Protocol):
    """Says what the handshake settled (ALPN, version, compression), then echoes lines."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is no asyncio.Transport subclass, though it is one in kind.
        self.transport = cast(asyncio.Transport, transport)
        tls = transport.get_extra_info("ssl_object")
        line = f"{tls.selected_alpn_protocol()} {tls.version()} {tls.compression()}\n"
        self.transport.write(line.encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@contextlib.asynccontextmanager
async def listener(certs: ServerCertificates) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Report, HOST, 0, ssl=certs.context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Seen:
    names: tuple[str, ...]  # the peer certificate's subjectAltName DNS names
    serial: int
    report: str  # "<alpn> <version> <compression>"
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


async def connect(port: int, ca: TestCa, server_name: str | None, **tweaks: Any) -> Seen:
    """A client trusting the test CA. With a server name, it is sent as SNI and checked
    against the certificate; without, no SNI is sent and only the chain is checked."""
    context = ca.client_context()
    if server_name is None or tweaks.pop("no_name_check", False):
        context.check_hostname = False
    if "alpn" in tweaks:
        context.set_alpn_protocols(tweaks.pop("alpn"))
    for name, value in tweaks.items():
        setattr(context, name, value)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=context, server_hostname=server_name or ""),
        TIMEOUT_S,
    )
    peer = writer.get_extra_info("peercert")
    report = (await asyncio.wait_for(reader.readline(), TIMEOUT_S)).decode().strip()
    names = tuple(v for k, v in peer["subjectAltName"] if k == "DNS")
    return Seen(names, int(peer["serialNumber"], 16), report, reader, writer)


async def close(seen: Seen) -> None:
    seen.writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await seen.writer.wait_closed()


async def served_names(port: int, ca: TestCa, server_name: str | None, **tweaks: Any) -> str:
    seen = await connect(port, ca, server_name, **tweaks)
    await close(seen)
    return ",".join(seen.names)


def replace(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def served_serial(port: int, ca: TestCa, server_name: str | None) -> int:
    seen = await connect(port, ca, server_name)
    await close(seen)
    return seen.serial


# ------------------------------------------------------------------------------ SNI


def test_each_name_gets_its_certificate(runner: asyncio.Runner, site: Site, ca: TestCa) -> None:
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        async with listener(certs) as port:
            assert await served_names(port, ca, "default.test") == "default.test"
            assert await served_names(port, ca, "wiki.t.test") == "wiki.t.test"
            assert await served_names(port, ca, "a.apps.t.test") == "*.apps.t.test"
            # SNI is compared without regard to case, as DNS names are.
            assert await served_names(port, ca, "WIKI.t.Test") == "wiki.t.test"
            seen = await connect(port, ca, "wiki.t.test")
            # ALPN comes from the switched context: it must offer http/1.1 there too.
            assert seen.report == "http/1.1 TLSv1.3 None"
            await close(seen)

    runner.run(scenario())


def test_sockets_accepted_by_hand_see_sni_too(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    """The proxy's listener accepts itself and hands sockets to connect_accepted_socket."""
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with socket.create_server((HOST, 0)) as sock:
            sock.setblocking(False)
            port = sock.getsockname()[1]
            client = asyncio.ensure_future(served_names(port, ca, "a.apps.t.test"))
            conn, _ = await asyncio.wait_for(loop.sock_accept(sock), TIMEOUT_S)
            transport, _ = await loop.connect_accepted_socket(_Report, conn, ssl=certs.context)
            assert await client == "*.apps.t.test"
            transport.close()

    runner.run(scenario())


def test_no_sni_and_names_nothing_covers_get_the_default(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        async with listener(certs) as port:
            assert await served_names(port, ca, None) == "default.test"
            for name in ("unknown.test", "a.b.apps.t.test", "apps.t.test", "wiki.t.test.x"):
                got = await served_names(port, ca, name, no_name_check=True)
                assert got == "default.test", name

    runner.run(scenario())


def test_a_wildcard_covers_exactly_one_label(site: Site) -> None:
    certs = ServerCertificates.load(site.config())
    chosen = {
        name: certs.certificate_for(name).names
        for name in (
            "a.apps.t.test",
            "A-1.Apps.T.Test.",  # the trailing dot of a fully qualified name is no difference
            "a.b.apps.t.test",
            "apps.t.test",
            ".apps.t.test",
            None,
            "",
        )
    }
    assert chosen == {
        "a.apps.t.test": ("*.apps.t.test",),
        "A-1.Apps.T.Test.": ("*.apps.t.test",),
        "a.b.apps.t.test": ("default.test",),
        "apps.t.test": ("default.test",),
        ".apps.t.test": ("default.test",),
        None: ("default.test",),
        "": ("default.test",),
    }
    assert [wildcard_parent(n) for n in ("*.a.b", "*.com", "w*.a.b", "*.*.a.b", "a.b")] == [
        "a.b",
        None,
        None,
        None,
        None,
    ]


def test_an_exact_name_beats_a_wildcard_and_the_first_listed_wins_a_tie(
    runner: asyncio.Runner, ca: TestCa, tmp_path: Path
) -> None:
    wild = ca.issue("*.t.test", "shared.test")
    exact = ca.issue("wiki.t.test")
    again = ca.issue("wiki.t.test", "shared.test")
    config = ProxyTlsConfig(
        certificates=(
            ca.issue("default.test").write(tmp_path, "default"),
            wild.write(tmp_path, "wild"),
            exact.write(tmp_path, "exact"),
            again.write(tmp_path, "again"),
        )
    )
    certs = ServerCertificates.load(config)
    assert certs.certificate_for("wiki.t.test").cert_path == str(tmp_path / "exact.crt")
    assert certs.certificate_for("other.t.test").cert_path == str(tmp_path / "wild.crt")
    assert certs.certificate_for("shared.test").cert_path == str(tmp_path / "wild.crt")
    # The last one is never chosen, and `pxproxy check` says so.
    assert certs.warnings() == [
        f"proxy.tls.certificates[3].cert: SNI never picks {tmp_path / 'again.crt'}: every "
        "name it covers is covered as well by an earlier certificate; only the first "
        "certificate is served without a match"
    ]

    async def scenario() -> None:
        async with listener(certs) as port:
            seen = await connect(port, ca, "wiki.t.test")
            assert seen.serial == exact.serial
            await close(seen)

    runner.run(scenario())


def test_internationalised_names_are_matched_as_a_labels(
    runner: asyncio.Runner, ca: TestCa, tmp_path: Path
) -> None:
    config = ProxyTlsConfig(
        certificates=(
            ca.issue("default.test").write(tmp_path, "default"),
            ca.issue("xn--bcher-kva.t.test").write(tmp_path, "idn"),
        )
    )
    certs = ServerCertificates.load(config)

    async def scenario() -> None:
        async with listener(certs) as port:
            # The client turns the U-label into the A-label it sends.
            assert await served_names(port, ca, "bücher.t.test") == "xn--bcher-kva.t.test"

    runner.run(scenario())


# ------------------------------------------------------------------------------ reload


def test_reload_serves_new_connections_and_keeps_open_ones(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())
    listener_context = certs.context

    async def scenario() -> None:
        async with listener(certs) as port:
            before = await connect(port, ca, "wiki.t.test")
            assert before.serial == site.serials["wiki"]
            renewed = ca.issue("wiki.t.test", "docs.t.test")
            renewed.write(site.directory, "wiki")  # what certbot's renewal does
            certs.reload(site.config())
            assert certs.context is listener_context
            after = await connect(port, ca, "wiki.t.test")
            assert after.serial == renewed.serial
            assert await served_names(port, ca, "docs.t.test") == "wiki.t.test,docs.t.test"
            # The connection made before the reload still talks.
            before.writer.write(b"still there\n")
            line = await asyncio.wait_for(before.reader.readline(), TIMEOUT_S)
            assert line == b"still there\n"
            await close(before)
            await close(after)

    runner.run(scenario())


def test_a_reload_that_fails_keeps_serving_the_old_certificates(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        async with listener(certs) as port:
            # The default is renewed fine, but wiki's new key is broken: nothing changes,
            # not even the default, since a reload is all or nothing.
            ca.issue("default.test").write(site.directory, "default")
            ca.issue("wiki.t.test").write(site.directory, "wiki")
            wiki_key = Path(site.files["wiki"].key)
            replace(wiki_key, b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
            with pytest.raises(TlsError) as info:
                certs.reload(site.config())
            assert str(info.value) == (
                f"proxy.tls.certificates[1].key: {wiki_key} holds a PEM private key block "
                "that does not parse"
            )
            assert await served_serial(port, ca, "wiki.t.test") == site.serials["wiki"]
            assert await served_serial(port, ca, None) == site.serials["default"]
            # A key of another certificate, likewise.
            replace(wiki_key, ca.issue("wiki.t.test").key_pem)
            with pytest.raises(TlsError, match=r"certificates\[1\]\.key: .* does not belong"):
                certs.reload(site.config())
            assert await served_serial(port, ca, "wiki.t.test") == site.serials["wiki"]

    runner.run(scenario())


def test_a_set_prepared_in_a_thread_is_served_once_swapped(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    """The daemon reads the files off the loop, then swaps on it."""
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        async with listener(certs) as port:
            renewed = ca.issue("wiki.t.test")
            renewed.write(site.directory, "wiki")
            loaded = await asyncio.to_thread(ServerCertificates.prepare, site.config())
            assert await served_serial(port, ca, "wiki.t.test") == site.serials["wiki"]
            certs.swap(loaded)
            assert await served_serial(port, ca, "wiki.t.test") == renewed.serial

    runner.run(scenario())


def test_load_names_the_file_that_is_missing(site: Site) -> None:
    missing = site.directory / "gone.key"
    config = ProxyTlsConfig(
        certificates=(
            site.files["default"],
            CertificateFiles(cert=site.files["wiki"].cert, key=str(missing)),
        )
    )
    with pytest.raises(TlsError) as info:
        ServerCertificates.load(config)
    assert str(info.value) == (
        f"proxy.tls.certificates[1].key: cannot read {missing}: No such file or directory"
    )


# ------------------------------------------------------------------------------ settings


def test_min_version_is_enforced_and_follows_a_reload(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}

    async def scenario() -> None:
        async with listener(certs) as port:
            seen = await connect(port, ca, "wiki.t.test", **tls12)
            assert seen.report == "http/1.1 TLSv1.2 None"
            cipher, _, _ = seen.writer.get_extra_info("cipher")
            assert cipher.startswith("ECDHE-")
            assert "GCM" in cipher or "CHACHA20" in cipher
            certs.reload(site.config(min_version="1.3"))
            # The server's alert, or the reset of a server that hangs up first.
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await connect(port, ca, "wiki.t.test", **tls12)
            # The open TLS 1.2 connection is not cut by the stricter setting.
            seen.writer.write(b"ok\n")
            assert await asyncio.wait_for(seen.reader.readline(), TIMEOUT_S) == b"ok\n"
            await close(seen)
            seen = await connect(port, ca, "wiki.t.test")
            assert seen.report == "http/1.1 TLSv1.3 None"
            await close(seen)

    runner.run(scenario())


def test_a_client_offering_only_h2_is_served_without_alpn(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())

    async def scenario() -> None:
        async with listener(certs) as port:
            seen = await connect(port, ca, "wiki.t.test", alpn=["h2"])
            assert seen.report == "None TLSv1.3 None"  # it falls back to HTTP/1.1
            await close(seen)

    runner.run(scenario())


def test_a_listener_that_starts_at_tls_1_3_refuses_tls_1_2(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config(min_version="1.3"))

    async def scenario() -> None:
        async with listener(certs) as port:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await connect(port, ca, None, maximum_version=ssl.TLSVersion.TLSv1_2)

    runner.run(scenario())


def test_the_listener_context_is_hardened(site: Site) -> None:
    certs = ServerCertificates.load(site.config())
    context = certs.context
    for flag in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION):
        assert context.options & flag == flag
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # no client certificates asked for
    assert ALPN_PROTOCOLS == ("http/1.1",)
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(name.startswith("ECDHE-") for name in tls12)
    assert not any("CBC" in c["description"] or "SHA1" in c["name"] for c in context.get_ciphers())


def test_plain_http_on_the_tls_port_is_dropped_quietly(
    runner: asyncio.Runner, site: Site, ca: TestCa
) -> None:
    certs = ServerCertificates.load(site.config())
    troubles: list[dict[str, Any]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: troubles.append(ctx))
        async with listener(certs) as port:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: wiki.t.test\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                assert b"HTTP" not in await asyncio.wait_for(reader.read(), TIMEOUT_S)
            writer.close()
            # The listener serves the next client as before.
            assert await served_names(port, ca, "wiki.t.test") == "wiki.t.test"

    runner.run(scenario())
    assert troubles == []


# ------------------------------------------------------------------------------ reports


def test_an_expired_certificate_is_served_with_a_warning(
    runner: asyncio.Runner, ca: TestCa, tmp_path: Path
) -> None:
    old = ca.issue("old.test", not_before=NOW - 100 * DAY, not_after=NOW - 10 * DAY)
    config = ProxyTlsConfig(certificates=(old.write(tmp_path, "old"),))
    certs = ServerCertificates.load(config)
    [warning] = certs.warnings()
    assert warning.startswith(f"proxy.tls.certificates[0].cert: {tmp_path / 'old.crt'} expired on ")
    assert "(10 days ago): clients will refuse it until it is renewed" in warning

    async def scenario() -> None:
        async with listener(certs) as port:
            # Served: a client that checks dates refuses it, which is the client's call.
            with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
                await connect(port, ca, "old.test")

    runner.run(scenario())


def test_warnings_for_certificates_ending_soon_not_yet_valid_or_never_picked(
    ca: TestCa, tmp_path: Path
) -> None:
    soon = ca.issue("soon.test", not_after=NOW + 3 * DAY + datetime.timedelta(hours=1))
    later = ca.issue("later.test", not_before=NOW + 2 * DAY)
    bare = ca.issue()  # no subjectAltName at all
    odd = ca.issue("w*.t.test", "*.test", "odd.test")
    config = ProxyTlsConfig(
        certificates=(
            soon.write(tmp_path, "soon"),
            later.write(tmp_path, "later"),
            bare.write(tmp_path, "bare"),
            odd.write(tmp_path, "odd"),
        )
    )
    certs = ServerCertificates.load(config)
    lines = certs.warnings()
    assert len(lines) == 4
    assert lines[0].startswith(f"proxy.tls.certificates[0].cert: {tmp_path / 'soon.crt'} expires")
    assert lines[0].endswith(", in 3 days")
    assert lines[1].startswith(
        f"proxy.tls.certificates[1].cert: {tmp_path / 'later.crt'} is not valid before "
    )
    assert lines[2] == (
        f"proxy.tls.certificates[2].cert: SNI never picks {tmp_path / 'bare.crt'}: it has no "
        "DNS names (subjectAltName); only the first certificate is served without a match"
    )
    assert lines[3] == (
        "proxy.tls.certificates[3].cert: w*.t.test, *.test: SNI matches a wildcard only as "
        "`*.` followed by two or more labels, as browsers do"
    )
    assert certs.certificate_for("odd.test").cert_path == str(tmp_path / "odd.crt")
    assert certs.certificate_for("wx.t.test").cert_path == str(tmp_path / "soon.crt")


def test_summary_and_description_name_what_each_certificate_covers(site: Site) -> None:
    certs = ServerCertificates.load(site.config())
    summary = certs.summary()
    assert [(s["cert"], s["names"], s["default"]) for s in summary] == [
        (site.files["default"].cert, ["default.test"], True),
        (site.files["wiki"].cert, ["wiki.t.test"], False),
        (site.files["apps"].cert, ["*.apps.t.test"], False),
    ]
    assert datetime.datetime.fromisoformat(summary[0]["not_after"]) > NOW
    until = f"{NOW + 90 * DAY:%Y-%m-%d}"
    assert certs.describe() == (
        f"default.test (until {until}); wiki.t.test (until {until}); *.apps.t.test (until {until})"
    )
