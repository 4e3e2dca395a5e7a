"""The pages' theme and template through a running daemon: a reload swaps them, also when only
the template file changed, and a broken template on reload keeps the running pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pxproxy.config.loader import load_config
from pxproxy.daemon import Daemon
from pxproxy.lab.server import LabServer

from ..support import lab_cluster

BROWSER = "text/html,*/*;q=0.8"


def write_config(path: Path, lab: LabServer, pages: dict[str, Any]) -> None:
    data = {
        "proxmox": [lab_cluster(lab)],
        "listen": {"proxy": "127.0.0.1:0", "api": "127.0.0.1:0"},
        "proxy": {"pages": pages},
        # vmid 7351: in this suite's range; no guest is needed for the pages of a 404.
        "routes": [{"host": "wiki.test", "guest": "lab:7351", "port": 8080}],
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))


async def not_found(daemon: Daemon) -> str:
    url = f"http://127.0.0.1:{daemon.proxy_port}/"
    headers = {"Host": "nowhere.test", "Accept": BROWSER}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        assert resp.status == 404
        return await resp.text()


async def test_a_reload_swaps_the_theme_and_the_template(
    lab_server: LabServer, tmp_path: Path
) -> None:
    config, template = tmp_path / "pxproxy.yml", tmp_path / "page.html"
    template.write_text("<h1 id='title'>one: $title</h1>")
    write_config(config, lab_server, {"theme": "paper", "template": str(template)})
    daemon = Daemon(load_config(str(config)), config_path=None)
    await daemon.start()
    daemon.config_path = config
    try:
        assert await not_found(daemon) == "<h1 id='title'>one: Not Found</h1>"
        template.write_text("<h1 id='title'>two: $title ($theme)</h1>")  # the config stays
        assert await daemon.reload()
        assert await not_found(daemon) == "<h1 id='title'>two: Not Found (paper)</h1>"
        template.write_text("<a href='$title'>")  # refused: the running pages stay
        assert not await daemon.reload()
        assert any("proxy.pages.template" in e for e in daemon.config_status().reload_errors)
        assert await not_found(daemon) == "<h1 id='title'>two: Not Found (paper)</h1>"
        write_config(config, lab_server, {"theme": "midnight"})  # back to the built-in page
        assert await daemon.reload()
        assert 'data-theme="midnight"' in await not_found(daemon)
    finally:
        await daemon.stop()
