"""TLS on the proxy listener, through the daemon against the lab: SNI picks each host's
certificate, guests hear X-Forwarded-Proto https, and a reload after a renewal serves the new
certificate to new connections while an open one goes on."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import yaml
from cryptography import x509

from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..certificates import TestCa
from ..support import lab_cluster, wait_for

# vmid 7240: used by no other test (the lab derives guest addresses from vmids).
WIKI = 7240


async def _https(port: int, name: str, context: ssl.SSLContext) -> tuple[int, bytes, int]:
    """(status, body, serial of the certificate served) for GET / on `name` over TLS."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=name
    )
    try:
        cert = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        serial = x509.load_der_x509_certificate(cert).serial_number
        writer.write(f"GET /headers HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, serial


async def test_sni_certificates_and_a_reload_after_renewal(
    lab_server: LabServer, tmp_path: Path
) -> None:
    lab_server.cluster.add_guest(WIKI, "lxc", "wiki", "pve1", status="running", static_ip=True)
    await lab_server.cluster.open()  # the guests' servers listen
    ca = TestCa()
    default, wiki = ca.issue("default.t.test"), ca.issue("wiki.t.test")
    files = [default.write(tmp_path, "default"), wiki.write(tmp_path, "wiki")]
    config = {
        "proxmox": [lab_cluster(lab_server)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "proxy": {"tls": {"certificates": [f.model_dump() for f in files]}},
        "routes": [{"host": "wiki.t.test", "guest": f"lab:{WIKI}", "port": 8080}],
    }
    path = tmp_path / "pxproxy.yml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(load_config(str(path)), config_path=path)
    await daemon.start()
    try:
        await wait_for(lambda: all(p.first_cycle.is_set() for p in daemon.pollers), 10, "a poll")
        port = daemon.proxy_port
        assert port is not None
        context = ca.client_context()
        status, body, serial = await _https(port, "wiki.t.test", context)
        assert (status, serial) == (200, wiki.serial), body
        assert json.loads(body)["X-Forwarded-Proto"] == "https"
        # A name no certificate covers gets the default (and the client, checking names, says no).
        loose = ca.client_context()
        loose.check_hostname = False
        _, _, other = await _https(port, "nothing.t.test", loose)
        assert other == default.serial
        # An open TLS connection, then a renewal and a reload.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="wiki.t.test"
        )
        renewed = ca.issue("wiki.t.test")
        renewed.write(tmp_path, "wiki")
        assert await daemon.reload()
        _, _, now_served = await _https(port, "wiki.t.test", context)
        assert now_served == renewed.serial
        writer.write(b"GET / HTTP/1.1\r\nHost: wiki.t.test\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
        writer.close()
        # A broken renewal keeps the running certificates, and says so in /health.
        (tmp_path / "wiki.key").write_text("not a key\n")
        assert not await daemon.reload()
        _, _, still = await _https(port, "wiki.t.test", context)
        assert still == renewed.serial
        assert any("wiki.key" in e for e in daemon.config_status().reload_errors)
    finally:
        await daemon.stop()
