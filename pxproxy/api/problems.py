"""Errors of the management API, rendered as RFC 7807 problem documents in one place."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.headers = dict(headers or {})
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def problem_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "about:blank", "title": error.title, "status": error.status}
    body["detail"] = error.detail
    body.update(error.extra)
    return web.Response(
        status=error.status,
        text=json.dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def bad_request(detail: str, **extra: Any) -> ApiError:
    return ApiError(400, "Bad Request", detail, **extra)


def not_found(detail: str, **extra: Any) -> ApiError:
    return ApiError(404, "Not Found", detail, **extra)


def ambiguous(detail: str, candidates: list[dict[str, Any]]) -> ApiError:
    return ApiError(409, "Ambiguous", detail, candidates=candidates)
