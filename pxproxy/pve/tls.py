"""TLS settings for the Proxmox API: system trust, a CA file, or a pinned SHA-256 fingerprint."""

from __future__ import annotations

import hashlib
import ssl

import aiohttp

from ..config.models import TlsConfig

SslSetting = ssl.SSLContext | aiohttp.Fingerprint | bool


def ssl_setting(tls: TlsConfig) -> SslSetting:
    """What aiohttp's connector takes as `ssl=`.

    A pinned fingerprint replaces chain verification (self-signed nodes have no chain), and
    aiohttp compares the SHA-256 of the peer's DER certificate on every new connection.
    """
    if tls.fingerprint:
        return aiohttp.Fingerprint(bytes.fromhex(tls.fingerprint))
    if not tls.verify:
        return False
    return ssl.create_default_context(cafile=tls.ca_file)


def fingerprint_of_der(der: bytes) -> str:
    """PVE's display form: AA:BB:... of the certificate's SHA-256."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
