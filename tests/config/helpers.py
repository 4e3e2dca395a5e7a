"""Config texts and error helpers shared by the tests of pxproxy/config."""

from __future__ import annotations

import textwrap

import pytest

from pxproxy.config.loader import ConfigError, parse_config
from pxproxy.config.models import Config

MINIMAL = """
proxmox:
  - url: https://pve.example.com:8006
    token_id: pxproxy@pve!daemon
    secret: token-secret-value
"""


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), env={} if env is None else env)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    """Each problem line ("key.path: message") of a config that must be refused."""
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    lines = str(info.value).splitlines()[1:]
    assert [str(p) for p in info.value.problems] == lines
    return lines


def with_routes(routes: str, extra: str = "") -> str:
    """MINIMAL plus a `routes:` block (YAML list lines) and any other top-level keys."""
    return MINIMAL + extra + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  ")
