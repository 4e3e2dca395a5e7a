"""`pxproxy integrations KIND` and `pxproxy inventory` as users run them (subprocesses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxproxy.config.loader import load_config
from pxproxy.integrations.recipes import KINDS, recipe

from .process import cli, environment

CONFIG = """
proxmox:
  - {name: home, url: "https://pve.home:8006", token_id: a@pve!t, secret: s}
listen: {proxy: "0.0.0.0:8080", api: "127.0.0.1:8081"}
routes:
  - {host: wiki.example.com, guest: wiki, port: 8080}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pxproxy.yml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


async def test_integrations_traefik_prints_the_recipe_for_the_config(config_file: Path) -> None:
    result = await cli("integrations", "traefik", "-c", str(config_file))
    assert result.code == 0, result.err
    expected = recipe("traefik", load_config(str(config_file)), config_path=str(config_file))
    assert result.out.rstrip("\n") == expected.rstrip("\n")
    assert result.err == ""


async def test_integrations_reads_pxproxy_config_from_the_environment(config_file: Path) -> None:
    result = await cli("integrations", "traefik", env=environment(PXPROXY_CONFIG=str(config_file)))
    assert result.code == 0, result.err
    assert "/integrations/traefik" in result.out


async def test_a_recipe_the_config_cannot_fill_is_exit_1_saying_why(config_file: Path) -> None:
    # No `dns:` in the config: the Caddy recipe has nothing to resolve guests with.
    result = await cli("integrations", "caddy", "-c", str(config_file))
    assert result.code == 1
    assert result.err.startswith("pxproxy integrations caddy: ")
    assert "dns" in result.err
    assert result.out == ""


async def test_integrations_refuses_an_unknown_kind(config_file: Path) -> None:
    result = await cli("integrations", "apache", "-c", str(config_file))
    assert result.code == 2
    for kind in KINDS:
        assert kind in result.err


async def test_inventory_against_no_daemon_is_exit_1_with_the_reason_on_stderr() -> None:
    result = await cli("inventory", "--list", env=environment(PXPROXY_API="http://127.0.0.1:1"))
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("pxproxy inventory: cannot reach the pxproxy API at")


async def test_inventory_wants_list_or_host() -> None:
    result = await cli("inventory")
    assert result.code == 2
    assert "--list" in result.err
    result = await cli("inventory", "--list", "--host", "x")
    assert result.code == 2
