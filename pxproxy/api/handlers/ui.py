"""`GET /ui/` and `GET /ui/{file}`: the dashboard's static files, served by pxproxy itself.

Open without a token: the files hold no data, every call the page makes needs its bearer token.
Only the files shipped in `pxproxy/api/ui/` are served, by name from a table read once at
import (no path ever reaches the filesystem, so `..` and its encodings are simply unknown
names), with a strict Content-Security-Policy: scripts and styles from these files only,
nothing inline, no frames. `/ui` and `/dashboard` redirect to `/ui/`.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import NamedTuple

from aiohttp import web

from ..problems import not_found

__all__ = ["UI_FILES", "dashboard_redirect", "ui_file", "ui_index"]

UI_PATH = "/ui/"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
# Revalidated on every load (the ETag makes that a 304): file names carry no version, so a
# cached copy must never outlive an upgrade of pxproxy.
CACHE_CONTROL = "no-cache"
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class UiFile(NamedTuple):
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, UiFile]:
    """Every file of the dashboard, read once: at import, not on the event loop."""
    files: dict[str, UiFile] = {}
    folder = resources.files("pxproxy.api").joinpath("ui")
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :] if "." in entry.name else ""
        if not entry.is_file() or suffix not in _TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[entry.name] = UiFile(body, _TYPES[suffix], etag)
    return files


UI_FILES = _load()


def _serve(request: web.Request, name: str) -> web.Response:
    found = UI_FILES.get(name)
    if found is None:
        raise not_found(f"no dashboard file {name[:80]!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": CACHE_CONTROL, "ETag": found.etag}
    if found.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = found.content_type
    return web.Response(body=found.body, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


async def ui_index(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


async def ui_file(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["file"])


async def dashboard_redirect(request: web.Request) -> web.Response:
    # Returned, not raised: the edge turns raised HTTP exceptions into problem documents.
    return web.Response(status=308, headers={"Location": UI_PATH, "Cache-Control": "no-cache"})
