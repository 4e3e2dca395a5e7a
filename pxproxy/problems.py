"""Problem documents (RFC 9457): the exception an error becomes once it has an HTTP answer, and
its one JSON form, which the management API renders here and the proxy as bytes
(proxy/replies.py).

Which error gets which status is decided in error_table.py; this module only carries and renders.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

__all__ = ["Problem", "render"]

CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error with its answer: status, title, detail, extra members, response headers."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def document(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status}
        body["detail"] = self.detail
        body.update(self.extra)
        return body

    def json(self) -> str:
        """The document as it goes on the wire, for the API and the proxy alike."""
        return json.dumps(self.document())


def render(error: Problem, headers: Mapping[str, str] | None = None) -> web.Response:
    """The answer for `error`; `headers` are added to (and win over) the error's own."""
    merged = {**error.headers, **(headers or {})}
    return web.Response(
        status=error.status,
        text=error.json(),
        content_type=CONTENT_TYPE,
        headers=merged or None,
    )
