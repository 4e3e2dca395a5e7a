"""The proxy listener's certificate and key files (`proxy.tls.certificates`), read and checked.

The semantic pass (config/semantics.py) reports what is wrong with them as config errors at
the key path of the file at fault; the listener (proxy/tls.py) reads them with the same code
before handing them to OpenSSL, and `pxproxy check` prints what they cover and until when.
An expired certificate is a warning, not an error: refusing to start would take every site
down while the renewal catches up, where serving it only troubles the clients.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .listener_tls import CertificateFiles

# A certificate chain or key is a few KiB; this bounds a path that names something else
# (a log file, /dev/zero).
MAX_PEM_BYTES = 1 << 20
# A certificate this close to its end gets a warning.
EXPIRY_WARNING_DAYS = 14

CertField = Literal["cert", "key"]
_CERT_MARKERS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----")
_KEY_MARKER = b"PRIVATE KEY-----"


class CertificateFileError(Exception):
    """One file of a certificate entry is unusable; `field` says which (cert or key), and
    the message names the file and the problem."""

    def __init__(self, field: CertField, path: str, message: str) -> None:
        super().__init__(message)
        self.field: CertField = field
        self.path = path


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What one certificate entry serves, as read from its files."""

    cert_path: str
    key_path: str
    names: tuple[str, ...]  # the subjectAltName DNS names, lowercased, in the file's order
    not_before: datetime.datetime  # UTC
    not_after: datetime.datetime  # UTC
    subject: str  # RFC 4514, for messages


def read_certificate_pair(files: CertificateFiles) -> CertificateInfo:
    """Both files read, parsed and matched; CertificateFileError naming the one at fault."""
    chain = read_chain(files.cert)
    key = read_private_key(files.key)
    check_pair(chain[0], key, files)
    return describe(chain[0], files)


def file_problems(cert: str | None, key: str | None) -> list[CertificateFileError]:
    """Everything wrong with an entry's files (None: not given): each file on its own,
    then whether the key is the certificate's."""
    problems: list[CertificateFileError] = []
    chain: list[x509.Certificate] = []
    private: PrivateKeyTypes | None = None
    try:
        chain = read_chain(cert) if cert else []
    except CertificateFileError as exc:
        problems.append(exc)
    try:
        private = read_private_key(key) if key else None
    except CertificateFileError as exc:
        problems.append(exc)
    if cert and key and chain and private is not None:
        try:
            check_pair(chain[0], private, CertificateFiles(cert=cert, key=key))
        except CertificateFileError as exc:
            problems.append(exc)
    return problems


def read_chain(path: str) -> list[x509.Certificate]:
    """The certificates of a PEM file, the server's own first."""
    data = _read("cert", path)
    if not any(marker in data for marker in _CERT_MARKERS):
        raise CertificateFileError(
            "cert", path, f"{path} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)"
        )
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateFileError(
            "cert", path, f"{path} holds a PEM certificate block that does not parse"
        ) from None
    try:
        for cert in chain:
            cert.extensions  # noqa: B018  parsed lazily: a broken extension shows here
    except ValueError as exc:
        raise CertificateFileError(
            "cert", path, f"{path} holds a certificate whose extensions do not parse: {exc}"
        ) from None
    return chain


def read_private_key(path: str) -> PrivateKeyTypes:
    data = _read("key", path)
    if _KEY_MARKER not in data:
        raise CertificateFileError(
            "key", path, f"{path} holds no PEM private key (a -----BEGIN PRIVATE KEY----- block)"
        )
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise CertificateFileError(
            "key", path, f"{path} is an encrypted private key; pxproxy needs it unencrypted"
        ) from None
    except UnsupportedAlgorithm:
        raise CertificateFileError(
            "key", path, f"{path} holds a private key of a kind TLS cannot use"
        ) from None
    except ValueError:
        raise CertificateFileError(
            "key", path, f"{path} holds a PEM private key block that does not parse"
        ) from None


def check_pair(cert: x509.Certificate, key: PrivateKeyTypes, files: CertificateFiles) -> None:
    """The key must be the one the certificate was issued for (blamed on the key file)."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        wanted = cert.public_key().public_bytes(der, spki)
    except (UnsupportedAlgorithm, ValueError):
        raise CertificateFileError(
            "cert", files.cert, f"{files.cert} holds a certificate with an unusable public key"
        ) from None
    if key.public_key().public_bytes(der, spki) != wanted:
        raise CertificateFileError(
            "key",
            files.key,
            f"{files.key} does not belong to the certificate in {files.cert} (the first one "
            "there, which must be the server's own): their public keys differ",
        )


def describe(cert: x509.Certificate, files: CertificateFiles) -> CertificateInfo:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(name.lower() for name in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()  # clients ignore the CN: such a certificate can only be the default
    return CertificateInfo(
        cert_path=files.cert,
        key_path=files.key,
        names=names,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        subject=cert.subject.rfc4514_string(),
    )


def validity_warnings(info: CertificateInfo, now: datetime.datetime) -> list[str]:
    """Expired, not yet valid, or ending within EXPIRY_WARNING_DAYS: words for the log."""
    day = "%Y-%m-%d %H:%M UTC"
    if now >= info.not_after:
        ago = (now - info.not_after).days
        return [
            f"{info.cert_path} expired on {info.not_after:{day}} ({ago} days ago): clients "
            "will refuse it until it is renewed (then send SIGHUP)"
        ]
    if now < info.not_before:
        return [f"{info.cert_path} is not valid before {info.not_before:{day}}"]
    left = info.not_after - now
    if left <= datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return [f"{info.cert_path} expires on {info.not_after:{day}}, in {left.days} days"]
    return []


def _read(field: CertField, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise CertificateFileError(
            field, path, f"cannot read {path}: {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_PEM_BYTES:
        raise CertificateFileError(
            field, path, f"{path} is over {MAX_PEM_BYTES >> 20} MiB: not a PEM {field} file"
        )
    return data
