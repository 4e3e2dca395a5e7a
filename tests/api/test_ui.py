"""The dashboard's files at /ui/: strict headers, only the shipped files, no path escapes."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from pxproxy.api.app import build_app, make_context
from pxproxy.api.handlers.ui import CONTENT_SECURITY_POLICY, UI_FILES
from pxproxy.config.loader import parse_config
from pxproxy.inventory.store import Inventory
from pxproxy.metrics import Metrics

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[2]
UI_DIR = ROOT / "pxproxy" / "api" / "ui"
SECRET = "ui-reader-secret-0123456"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


@pytest.fixture
async def api(aiohttp_client: AiohttpClient) -> Client:
    config = parse_config(
        textwrap.dedent(
            f"""
            proxmox:
              - {{name: lab, url: "https://pve.lab:8006", token_id: a@pve!t, secret: s}}
            api:
              tokens:
                - {{name: reader, secret: {SECRET}, scopes: [read]}}
            """
        ),
        env={},
    )
    inventory = Inventory()
    ctx = make_context(config, inventory, Metrics(), loopback=True)
    return await aiohttp_client(build_app(ctx))


def assert_strict_headers(headers: Any) -> None:
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/ui/", "text/html", b"<title>pxproxy dashboard</title>"),
        ("/ui/index.html", "text/html", b'id="signin"'),
        ("/ui/app.js", "text/javascript", b"class SseParser"),
        ("/ui/app.css", "text/css", b"prefers-color-scheme"),
    ],
)
async def test_files_are_served_open_with_strict_headers(
    api: Client, path: str, content_type: str, marker: bytes
) -> None:
    # No token: the files hold no data (tokens are configured, so the API itself needs one).
    async with api.get(path) as resp:
        assert resp.status == 200
        assert resp.content_type == content_type
        assert resp.charset == "utf-8"
        assert_strict_headers(resp.headers)
        assert marker in await resp.read()
        etag = resp.headers["ETag"]
    async with api.get(path, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert resp.headers["ETag"] == etag
        assert_strict_headers(resp.headers)
        assert await resp.read() == b""
    async with api.head(path) as resp:
        assert resp.status == 200
        assert resp.headers["ETag"] == etag


async def test_the_data_behind_the_page_needs_the_token(api: Client) -> None:
    async with api.get("/api/v1/me") as resp:
        assert resp.status == 401
    async with api.get("/api/v1/me", headers={"Authorization": f"Bearer {SECRET}"}) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("path", ["/ui", "/dashboard", "/"])
async def test_redirects_to_the_dashboard(api: Client, path: str) -> None:
    async with api.get(path, allow_redirects=False) as resp:
        assert resp.status == 308
        assert resp.headers["Location"] == "/ui/"
    async with api.get(path) as resp:
        assert resp.status == 200
        assert str(resp.url).endswith("/ui/")


@pytest.mark.parametrize("path", ["/api/v1/", "/api/v1"])
async def test_the_api_root_says_where_to_start(api: Client, path: str) -> None:
    from pxproxy.api.models import ApiIndex

    async with api.get(path) as resp:  # no token: it is open, like the document it names
        assert resp.status == 200
        index = ApiIndex.model_validate(await resp.json())
    assert index.openapi == "/api/v1/openapi.json"
    assert index.dashboard == "/ui/"
    async with api.get(index.openapi) as resp:
        assert resp.status == 200


async def raw_get(api: Client, path: str) -> tuple[int, bytes]:
    """The path sent exactly as given: no client normalises or re-encodes it."""
    assert api.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", api.server.port)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/../pyproject.toml",
        "/ui/..%2fpyproject.toml",
        "/ui/%2e%2e%2fpyproject.toml",
        "/ui/%2E%2E/pyproject.toml",
        "/ui/%2e%2e%5cpyproject.toml",
        "/ui/..%5c..%5cpyproject.toml",
        "/ui/%252e%252e%252fpyproject.toml",
        "/ui/....//pyproject.toml",
        "/ui//etc/passwd",
        "/ui/%2fetc%2fpasswd",
        "/ui/app.js%00.html",
        "/ui/app.js/",
        "/ui/index.html/../../pyproject.toml",
        "/ui/py.typed",
        "/ui/__init__.py",
        "/ui/.",
        "/ui/%2e",
    ],
)
async def test_unknown_files_and_path_escapes_are_404(api: Client, path: str) -> None:
    status, body = await raw_get(api, path)
    assert status in (400, 404), (path, status)
    assert b"[build-system]" not in body
    assert b"root:" not in body


async def test_only_the_shipped_files_are_known() -> None:
    assert set(UI_FILES) == {"index.html", "app.css", "app.js"}
    for name, file in UI_FILES.items():
        assert file.body == (UI_DIR / name).read_bytes()
    assert CONTENT_SECURITY_POLICY == CSP


def test_the_files_are_package_data() -> None:
    """A pip install serves the dashboard: pyproject's package data takes every file."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["pxproxy"]
    for path in UI_DIR.iterdir():
        relative = path.relative_to(ROOT / "pxproxy").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


def test_the_page_has_no_inline_code_and_no_external_assets() -> None:
    html = (UI_DIR / "index.html").read_text()
    # The CSP would block them anyway; the page must not need them.
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="app.js" defer>']
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    for text in (html, (UI_DIR / "app.css").read_text(), (UI_DIR / "app.js").read_text()):
        assert not re.search(r"(src|href)=\"(https?:)?//", text)
        assert "@import" not in text
        assert "url(http" not in text


def test_data_never_goes_in_as_markup() -> None:
    """The escaping rule of app.js, checked: no HTML parsing of any value."""
    js = (UI_DIR / "app.js").read_text()
    assert "ESCAPING RULE" in js
    code = re.sub(r"/\*.*?\*/", "", js, flags=re.S)  # the rule's own comment names them
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink
    # The token stays in session storage: never in a URL or a cookie.
    assert "document.cookie" not in code
    assert "localStorage.setItem(TOKEN_KEY" not in code
