"""config.example.yml documents every key with its default: it must stay a valid config."""

from __future__ import annotations

from pathlib import Path

from pxproxy.config.loader import parse_config
from pxproxy.config.models import Config

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yml"


def test_example_config_is_valid_and_states_the_defaults() -> None:
    env = {"PVE_TOKEN_SECRET": "token-secret", "OPS_TOKEN": "ops-token-0123456789"}
    config = parse_config(EXAMPLE.read_text(encoding="utf-8"), env=env)
    defaults = Config.model_validate(
        {"proxmox": [{"url": "https://pve:8006", "token_id": "a@pve!t", "secret": "s"}]}
    )
    assert config.shutdown_grace == defaults.shutdown_grace
    assert config.log_level == defaults.log_level
    # Every API setting but the tokens is shown at its default.
    assert config.api.model_dump(exclude={"tokens"}) == defaults.api.model_dump(exclude={"tokens"})
    assert config.state == defaults.state
    assert config.audit == defaults.audit
    for key in ("max_header_size", "max_headers", "header_timeout", "keepalive_timeout"):
        assert getattr(config.proxy, key) == getattr(defaults.proxy, key), key
