"""Hostile request heads against both listeners of a running daemon: a secret sent in any
malformed, oversized or overlong head appears in no response and nowhere in the log, each
rejection is one line without a traceback, and every answer says `Server: pxproxy`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from pxproxy.config.models import Config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster

SECRET = "s3cret-Zq7xW2-never-logged"
TOKEN = "heads-test-token-0123456"
VMID = 611
HOST = "heads.test"
S = SECRET.encode()


def config(lab: LabServer) -> Config:
    return Config.model_validate(
        {
            "proxmox": [lab_cluster(lab)],
            "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
            "api": {"tokens": [{"name": "t", "secret": TOKEN}], "header_timeout": "1s"},
            "proxy": {"header_timeout": "1s"},
            "routes": [{"host": HOST, "guest": VMID, "port": 8080}],
        }
    )


@contextlib.asynccontextmanager
async def daemon(lab: LabServer) -> AsyncIterator[Daemon]:
    lab.cluster.add_guest(VMID, "lxc", "heads", "pve1", status="running", static_ip=True)
    await lab.cluster.open()
    d = Daemon(config(lab))
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


def request(*lines: bytes, target: bytes = b"/") -> bytes:
    head = b"GET " + target + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
    return head + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


# Each malformed-header case carries the secret; bare LF, control characters, NUL, an overlong
# value or line, a bad name, obs-fold, an oversized head, too many headers and non-HTTP bytes.
CORPUS: dict[str, bytes] = {
    "trailing CR": request(b"Authorization: Bearer " + S + b"\r"),
    "control character": request(b"Authorization: Bearer " + S + b"\x01x"),
    "NUL": request(b"Authorization: Bearer " + S + b"\x00"),
    "DEL": request(b"Cookie: session=" + S + b"\x7f"),
    "value over 16384 bytes": request(b"Authorization: Bearer " + S + b"A" * 17000),
    "proxy-authorization with CR": request(b"Proxy-Authorization: Basic " + S + b"\r"),
    "x-api-key control": request(b"X-Api-Key: " + S + b"\x02"),
    "set-cookie control": request(b"Set-Cookie: id=" + S + b"\x03"),
    "bad header name": request(b"Author\x01zation: Bearer " + S),
    "space before colon": request(b"Authorization : Bearer " + S),
    "obs-fold": request(b"X-A: 1", b" Authorization: Bearer " + S),
    "bare LF": b"GET / HTTP/1.1\nHost: "
    + HOST.encode()
    + b"\nAuthorization: Bearer "
    + S
    + b"\n\n",
    "target over 16384 bytes": request(target=b"/" + S + b"a" * 17000),
    "control in target": request(target=b"/" + S + b"\x01"),
    "oversized head": request(*(b"Cookie: c%d=" % i + S + b"x" * 2000 for i in range(40))),
    "too many headers": request(*(b"X-Api-Key: " + S for _ in range(150))),
    "not HTTP": b"\x16\x03\x01\x02\x00" + S + b"\r\n\r\n",
    "bad method": b"G\x01T / HTTP/1.1\r\nAuthorization: Bearer " + S + b"\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\nAuthorization: Bearer " + S + b"\r\n\r\n",
}


# Over the API's 8190-byte line limit; the proxy forwards such lines (its limit is the head's).
API_ONLY: dict[str, bytes] = {
    "value over 8190 bytes": request(b"Authorization: Bearer " + S + b"A" * 9000),
    "target over 8190 bytes": request(target=b"/" + S + b"a" * 9000),
}


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                return await reader.read()
        return b""
    finally:
        writer.close()


async def test_no_secret_reaches_a_response_or_the_log(
    lab_server: LabServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp.* included
    answers: dict[tuple[str, str], bytes] = {}
    async with daemon(lab_server) as d:
        assert d.api_port is not None
        assert d.proxy_port is not None
        for name, data in CORPUS.items():
            for listener, port in (("api", d.api_port), ("proxy", d.proxy_port)):
                answers[(listener, name)] = await exchange(port, data)
        for name, data in API_ONLY.items():
            answers[("api", name)] = await exchange(d.api_port, data)
    for key, answer in answers.items():
        assert S not in answer, key
        # aiohttp's own answers to what it cannot parse are HTTP/1.0.
        assert re.match(rb"HTTP/1\.[01] (400|431) ", answer), (key, answer[:80])
        assert b"\r\nServer: pxproxy\r\n" in answer, key
        assert b"aiohttp" not in answer, key
    texts = [caplog.text]
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_text:
            texts.append(record.exc_text)
    assert not any(SECRET in text for text in texts)
    assert not any(SECRET[:12] in text for text in texts)  # nor a truncated quote of it
    # One line each, no traceback, rate-limited.
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    rejected = [r for r in caplog.records if "rejected a request from 127.0.0.1:" in r.message]
    assert 10 <= len(rejected) <= 2 * 10 + 2


async def test_every_answer_names_pxproxy_as_the_server(lab_server: LabServer) -> None:
    async with daemon(lab_server) as d, aiohttp.ClientSession() as session:
        api = f"http://127.0.0.1:{d.api_port}"
        proxy = f"http://127.0.0.1:{d.proxy_port}"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answers = []
        for method, url, headers in [
            ("GET", f"{api}/health", {}),
            ("GET", f"{api}/api/v1/guests", {}),  # 401
            ("GET", f"{api}/api/v1/guests", auth),
            ("GET", f"{api}/nowhere", auth),  # 404
            ("DELETE", f"{api}/health", {}),  # 405
            ("GET", f"{proxy}/", {"Host": "unknown.test"}),  # 404 of the proxy itself
        ]:
            async with session.request(method, url, headers=headers) as resp:
                answers.append((resp.status, resp.headers.getall("Server", [])))
        # A guest's own Server header passes through the proxy unchanged.
        guest = lab_server.cluster.guests[VMID]
        async with session.get(f"http://{guest.ip}:8080/") as resp:
            direct = resp.headers.getall("Server", [])
        for _ in range(100):  # the route's first poll
            async with session.get(f"{proxy}/", headers={"Host": HOST}) as resp:
                if resp.status == 200:
                    routed = resp.headers.getall("Server", [])
                    break
            await asyncio.sleep(0.05)
    assert [a[0] for a in answers] == [200, 401, 200, 404, 405, 404]
    assert all(server == ["pxproxy"] for _, server in answers), answers
    assert routed == direct
