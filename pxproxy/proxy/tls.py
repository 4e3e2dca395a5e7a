"""TLS on the proxy listener (`proxy.tls`): certificates chosen by SNI, reloaded in place.

The listener is created once with `ServerCertificates.context`, and that object never
changes. It holds no certificate itself: its `sni_callback` runs on every handshake (with
`None` when the client sends no SNI) and switches the connection to the context of the
certificate chosen. A reload builds every per-certificate context first and then swaps one
reference, so a handshake sees either the old set or the new one, never a mix, and a reload
that fails leaves the old set serving. Connections already open keep what they negotiated.

OpenSSL settles the protocol version with the listener's context, before SNI is seen, and
takes the certificate, the ciphers and ALPN from the switched one: every context gets the same
settings, and a reload sets the listener's minimum version as well.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config.certificates import (
    CertificateFileError,
    CertificateInfo,
    read_certificate_pair,
    validity_warnings,
)
from ..config.listener_tls import CertificateFiles, ProxyTlsConfig

# The proxy speaks HTTP/1.1 only; a client offering only h2 gets no ALPN and falls back.
ALPN_PROTOCOLS = ("http/1.1",)
# TLS 1.2: forward-secret AEAD suites only (Mozilla's "intermediate" list without DHE, whose
# parameters Python never loads). TLS 1.3 keeps OpenSSL's own suites, all of them AEAD.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_OPTIONS = (
    ssl.OP_NO_COMPRESSION  # CRIME
    | ssl.OP_NO_RENEGOTIATION  # a client-started renegotiation costs the server a handshake
    | ssl.OP_CIPHER_SERVER_PREFERENCE
    | ssl.OP_SINGLE_ECDH_USE
)


class TlsError(Exception):
    """The certificates cannot be served; the message names the key path, the file and
    the problem."""


@dataclass(frozen=True, slots=True)
class CertificateSet:
    """One loaded set: a context per certificate and the names that choose it. Made by
    `ServerCertificates.prepare`, served after `swap`."""

    min_version: str
    certificates: tuple[CertificateInfo, ...]
    contexts: tuple[ssl.SSLContext, ...]
    exact: Mapping[str, int]  # name -> index of the first certificate naming it
    wildcard: Mapping[str, int]  # "apps.example.com" -> the first with *.apps.example.com

    def index_for(self, server_name: str | None) -> int:
        """Exact name first, then a wildcard for exactly one more label; else the default."""
        if not server_name:
            return 0
        name = server_name.rstrip(".").lower()
        found = self.exact.get(name)
        if found is not None:
            return found
        label, dot, parent = name.partition(".")
        if label and dot:
            return self.wildcard.get(parent, 0)
        return 0


def wildcard_parent(name: str) -> str | None:
    """`*.apps.example.com` -> `apps.example.com`; None for an exact name, or a wildcard
    that clients do not honour (partial labels like `w*.example.com`, or one covering a
    single-label name like `*.com`)."""
    if not name.startswith("*."):
        return None
    parent = name[2:]
    if "*" in parent or "." not in parent or not all(parent.split(".")):
        return None
    return parent


class ServerCertificates:
    """The listener's certificates: `context` for the listener's `ssl=`, `reload` on SIGHUP.

    `load` and `reload` read files; to keep that off the event loop, run `prepare` in a
    thread and pass its set to the constructor or to `swap`, on the loop's thread."""

    def __init__(self, loaded: CertificateSet) -> None:
        self._served = loaded
        self.context = _context(loaded.min_version)
        self.context.sni_callback = self._choose

    @staticmethod
    def prepare(config: ProxyTlsConfig) -> CertificateSet:
        """Read and load every certificate entry (no shared state: safe in any thread);
        TlsError on the first that cannot be served."""
        return _build(config)

    @classmethod
    def load(cls, config: ProxyTlsConfig) -> ServerCertificates:
        return cls(_build(config))

    def swap(self, loaded: CertificateSet) -> None:
        """Serve `loaded` to new connections; open ones keep what they negotiated."""
        self.context.minimum_version = _VERSIONS[loaded.min_version]
        self._served = loaded

    def reload(self, config: ProxyTlsConfig) -> None:
        """Read the files again (renewed certificates) and serve them to new connections;
        on TlsError nothing changes."""
        self.swap(_build(config))

    def certificates(self) -> tuple[CertificateInfo, ...]:
        """What is served now, the default first."""
        return self._served.certificates

    def certificate_for(self, server_name: str | None) -> CertificateInfo:
        """The certificate a handshake asking for `server_name` (None: no SNI) gets."""
        served = self._served
        return served.certificates[served.index_for(server_name)]

    def warnings(self, now: datetime.datetime | None = None) -> list[str]:
        """Certificates expired or about to, and certificates SNI can never pick: for the
        log after `load` and `reload`, and for `pxproxy check`."""
        return _warnings(self._served, now or datetime.datetime.now(datetime.UTC))

    def summary(self) -> list[dict[str, Any]]:
        """JSON-ready, for /health and the start-up log: names and end of validity."""
        return [
            {
                "cert": info.cert_path,
                "names": list(info.names),
                "not_after": info.not_after.isoformat(),
                "default": index == 0,
            }
            for index, info in enumerate(self._served.certificates)
        ]

    def describe(self) -> str:
        """One line for the log: each certificate's names and end of validity."""
        return "; ".join(
            f"{', '.join(info.names) or info.subject} (until {info.not_after:%Y-%m-%d})"
            for info in self._served.certificates
        )

    def _choose(
        self,
        ssl_object: ssl.SSLObject | ssl.SSLSocket,
        server_name: str | None,
        _listener: ssl.SSLContext,
    ) -> None:
        served = self._served  # read once: a reload may swap it meanwhile
        ssl_object.context = served.contexts[served.index_for(server_name)]


def _context(min_version: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.options |= _OPTIONS
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return context


def _build(config: ProxyTlsConfig) -> CertificateSet:
    infos: list[CertificateInfo] = []
    contexts: list[ssl.SSLContext] = []
    exact: dict[str, int] = {}
    wildcard: dict[str, int] = {}
    for index, files in enumerate(config.certificates):
        where = f"proxy.tls.certificates[{index}]"
        try:
            info = read_certificate_pair(files)
        except CertificateFileError as exc:
            raise TlsError(f"{where}.{exc.field}: {exc}") from None
        contexts.append(_load(where, files, config.min_version))
        infos.append(info)
        for name in info.names:
            parent = wildcard_parent(name)
            if parent is not None:
                wildcard.setdefault(parent, index)
            elif "*" not in name:
                exact.setdefault(name, index)
    return CertificateSet(config.min_version, tuple(infos), tuple(contexts), exact, wildcard)


def _load(where: str, files: CertificateFiles, min_version: str) -> ssl.SSLContext:
    context = _context(min_version)
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as exc:  # an OSError too: first
        raise TlsError(
            f"{where}: OpenSSL refused {files.cert} with {files.key}: {exc.reason or exc}"
        ) from None
    except OSError as exc:  # the file went away since it was read
        raise TlsError(f"{where}: cannot read {exc.filename}: {exc.strerror or exc}") from None
    return context


def _warnings(served: CertificateSet, now: datetime.datetime) -> list[str]:
    out: list[str] = []
    for index, info in enumerate(served.certificates):
        where = f"proxy.tls.certificates[{index}].cert"
        out.extend(f"{where}: {w}" for w in validity_warnings(info, now))
        odd = [n for n in info.names if "*" in n and wildcard_parent(n) is None]
        if odd:
            out.append(
                f"{where}: {', '.join(odd)}: SNI matches a wildcard only as `*.` followed by "
                "two or more labels, as browsers do"
            )
        if index > 0 and not _ever_chosen(served, index):
            why = (
                "every name it covers is covered as well by an earlier certificate"
                if info.names
                else "it has no DNS names (subjectAltName)"
            )
            out.append(
                f"{where}: SNI never picks {info.cert_path}: {why}; only the first "
                "certificate is served without a match"
            )
    return out


def _ever_chosen(served: CertificateSet, index: int) -> bool:
    for name in served.certificates[index].names:
        parent = wildcard_parent(name)
        table, key = (served.wildcard, parent) if parent is not None else (served.exact, name)
        if table.get(key) == index:
            return True
    return False
