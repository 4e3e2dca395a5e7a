"""Load the YAML config: `${ENV}` substitution, then validation with errors naming key paths."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import ValidationError

from .models import Config

DEFAULT_PATH = "pxproxy.yml"
ENV_VAR = "PXPROXY_CONFIG"
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key path."""


def key_path(loc: tuple[int | str, ...]) -> str:
    """("proxmox", 0, "tls", "fingerprint") -> "proxmox[0].tls.fingerprint"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def substitute_env(node: object, env: Mapping[str, str], loc: tuple[int | str, ...] = ()) -> object:
    """Replace `${VAR}` / `${VAR:-default}` in every string value; `$$` is a literal `$`."""
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(f"{key_path(loc)}: environment variable {name} is not set")

        return _ENV_RE.sub(repl, node)
    if isinstance(node, dict):
        return {k: substitute_env(v, env, (*loc, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, (*loc, i)) for i, v in enumerate(node)]
    return node


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{key_path(loc)}: {msg}")
    return "\n".join(lines)


def parse_config(
    text: str, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'proxmox' key")
    try:
        data = substitute_env(raw, os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration:\n{_describe(exc)}") from None


def config_path(cli_path: str | None) -> Path:
    return Path(cli_path or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(cli_path: str | None = None) -> Config:
    path = config_path(cli_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    return parse_config(text, source=str(path))
