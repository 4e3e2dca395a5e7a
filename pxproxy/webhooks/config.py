"""`webhooks:`, one entry per endpoint. The URL and secret never print (they carry tokens)."""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from ..config.allowlists import check_guest_entry
from ..config.durations import Seconds

WebhookEvent = Literal[
    "wake", "ready", "wake_failed", "idle_stop", "cluster_degraded", "cluster_recovered"
]
ALL_EVENTS: tuple[WebhookEvent, ...] = get_args(WebhookEvent)
WebhookFormat = Literal["json", "discord", "slack", "ntfy"]
# Formats whose endpoint takes a secret: json signs with it, ntfy sends it as a bearer token.
SECRET_FORMATS = ("json", "ntfy")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_url(value: str) -> str:
    # The message never repeats the URL: its path or query often holds the endpoint's token.
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL without white space")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ValueError("is not a URL: write it like https://hooks.example.com/path") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"the scheme must be https:// (or http://), not {parts.scheme[:20] or 'none'}"
        )
    if not parts.hostname:
        raise ValueError("has no host: write it like https://hooks.example.com/path")
    return value


def _ref_text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


GuestFilter = Annotated[str, BeforeValidator(_ref_text), AfterValidator(check_guest_entry)]


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: Annotated[str, AfterValidator(_check_url), Field(repr=False)]
    format: WebhookFormat = "json"
    # json: the HMAC-SHA256 key of X-Pxproxy-Signature; ntfy: an access token (Bearer).
    secret: SecretStr | None = None
    events: tuple[WebhookEvent, ...] = Field(default=ALL_EVENTS, min_length=1)
    # Guests whose events are sent: refs (cluster:vmid, a vmid, a name) or name globs.
    guests: tuple[GuestFilter, ...] = ("*",)
    timeout: Seconds = Field(default=10.0, gt=0, le=300)  # per attempt
    retries: int = Field(default=5, ge=0, le=100)  # attempts after the first
    # The first retry waits about `backoff`, each next one twice as long, up to `backoff_max`.
    backoff: Seconds = Field(default=1.0, gt=0, le=3600)
    backoff_max: Seconds = Field(default=300.0, gt=0, le=86400)
    # Deliveries waiting; more are dropped and counted (a dead endpoint holds no memory).
    queue: int = Field(default=100, ge=1, le=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"{value[:80]!r} is not a name (letters, digits, . _ -, up to 63)")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[WebhookEvent, ...]) -> tuple[WebhookEvent, ...]:
        return tuple(dict.fromkeys(value))

    # Field validators (they see the fields above them): their errors name the key itself.
    @field_validator("secret")
    @classmethod
    def _secret_fits(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        fmt = info.data.get("format")
        if value is not None and fmt is not None and fmt not in SECRET_FORMATS:
            raise ValueError(
                f"a {fmt} webhook carries its token in the url; secret is for json "
                "(the signature key) and ntfy (an access token)"
            )
        return value

    @field_validator("backoff_max")
    @classmethod
    def _cap(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("backoff")
        if first is not None and value < first:
            raise ValueError(f"must be at least backoff ({first:g}s)")
        return value

    @property
    def host(self) -> str:
        """What may be shown of the URL: its host and port, never the path or query."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{parts.port}" if parts.port else shown


def check_unique(hooks: tuple[WebhookConfig, ...]) -> tuple[WebhookConfig, ...]:
    names = [h.name for h in hooks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"webhook names must be unique: {', '.join(dupes)}")
    return hooks
