"""`proxy.tls`: TLS on the proxy listener, from certificate and key files (no ACME: that stays
with the companion proxies).

The schema only; the files are read by the semantic pass (config/certificates.py), so a missing
file or a key that belongs to another certificate is a config error naming its key path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _version_text(value: object) -> object:
    """`min_version: 1.2` unquoted is a YAML float; it means the same as "1.2"."""
    return str(value) if isinstance(value, float) else value


class CertificateFiles(_Strict):
    # PEM: the certificate first, then any intermediates (a full chain file, as certbot
    # writes it); the key unencrypted (keep it mode 0600). Both may be one combined file.
    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class ProxyTlsConfig(_Strict):
    # The first is the default: for clients without SNI, or asking for a name that no
    # certificate covers. Otherwise SNI picks the certificate whose DNS names cover the name
    # asked for (an exact name before a wildcard; among equals, the first listed).
    certificates: tuple[CertificateFiles, ...]
    min_version: Annotated[Literal["1.2", "1.3"], BeforeValidator(_version_text)] = "1.2"

    # Not Field(min_length=1): that would also report a list whose only entry is invalid
    # as empty (see Config._clusters).
    @field_validator("certificates")
    @classmethod
    def _some(cls, value: tuple[CertificateFiles, ...]) -> tuple[CertificateFiles, ...]:
        if not value:
            raise ValueError("needs at least one {cert, key} entry; the first is the default")
        return value
