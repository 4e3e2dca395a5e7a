"""A self-signed certificate for the lab's HTTPS API, made at start and never written to disk
outside a private temporary directory."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..pve.tls import fingerprint_of_der

VALID_DAYS = 30


@dataclass(frozen=True, slots=True)
class LabCertificate:
    cert_pem: bytes
    key_pem: bytes
    fingerprint: str  # AA:BB:... SHA-256, the form PVE shows and pxproxy's config accepts

    def server_context(self) -> ssl.SSLContext:
        """An SSL context serving this certificate (the key only ever lives in memory and a
        0600 file in a private directory that is removed at once)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        with tempfile.TemporaryDirectory(prefix="pxproxy-lab-") as tmp:
            cert_path = os.path.join(tmp, "lab.crt")
            key_path = os.path.join(tmp, "lab.key")
            with open(cert_path, "wb") as fh:
                fh.write(self.cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.key_pem)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx


def make_certificate(hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> LabCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pxproxy lab")])
    alt: list[x509.GeneralName] = []
    for host in dict.fromkeys((*hosts, "localhost", "127.0.0.1")):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return LabCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint=fingerprint_of_der(der),
    )
