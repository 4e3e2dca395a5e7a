"""The management API listener's limits, from `api:` in the config."""

from __future__ import annotations

from typing import Any

from ..config.models import ApiConfig
from ..listeners.head_guard import HeadLimits

# aiohttp's own per-line limit; a line never exceeds the head limit either.
MAX_LINE = 8190


def head_limits(api: ApiConfig) -> HeadLimits:
    return HeadLimits(
        max_head_bytes=api.max_header_size,
        max_headers=api.max_headers,
        header_timeout_s=api.header_timeout,
        max_connections_per_client=api.max_connections_per_client,
    )


def handler_kwargs(api: ApiConfig) -> dict[str, Any]:
    """Settings of each API connection's aiohttp RequestHandler."""
    line = min(MAX_LINE, api.max_header_size)
    return {
        "keepalive_timeout": api.keepalive_timeout,
        "max_line_size": line,
        "max_field_size": line,
        "max_headers": api.max_headers,
        "access_log": None,
    }
