"""Load the YAML config: `${ENV}` substitution, then one validation naming every key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from .models import Config
from .problems import Loc, Problem, document_order, key_path
from .semantics import semantic_problems
from .wording import describe_errors

__all__ = ["ConfigError", "config_path", "key_path", "load_config", "parse_config", "validate"]

DEFAULT_PATH = "pxproxy.yml"
ENV_VAR = "PXPROXY_CONFIG"
_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and key path.

    `problems` holds one line per problem when validation found several."""

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


def substitute_env(
    node: object,
    env: Mapping[str, str],
    loc: Loc = (),
    missing: list[tuple[Loc, str]] | None = None,
) -> object:
    """Replace `${VAR}` / `${VAR:-default}` in every string value; `$$` is a literal `$`.

    A variable that is not set raises ConfigError, unless `missing` collects (key location,
    name) pairs: then every missing one is recorded and replaced by the empty string."""
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            if missing is None:
                raise ConfigError(f"{key_path(loc)}: environment variable {name} is not set")
            missing.append((loc, name))
            return ""

        return _ENV_RE.sub(repl, node)
    if isinstance(node, dict):
        return {k: substitute_env(v, env, (*loc, str(k)), missing) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, (*loc, i), missing) for i, v in enumerate(node)]
    return node


def _describe(error: ValidationError, skip: Sequence[Loc] = ()) -> list[Problem]:
    """The schema's errors in words for people (config/wording.py), one per key path."""
    return [problem for _, problem in describe_errors(error, Config, skip)]


def validate(
    raw: Mapping[str, object], env: Mapping[str, str]
) -> tuple[Config | None, list[Problem]]:
    """The one validation of `check` and `run`: every problem of the file in one pass.

    Every missing environment variable; every schema error (unknown keys with a suggestion,
    bad values), leaving out those caused by a missing variable; then the semantic checks on
    every part that parsed (config/semantics.py). The Config is None when anything is wrong."""
    missing: list[tuple[Loc, str]] = []
    data = substitute_env(dict(raw), env, (), missing)
    assert isinstance(data, dict)
    problems = [
        Problem(key_path(loc), f"environment variable {name} is not set") for loc, name in missing
    ]
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_describe(exc, [loc for loc, _ in missing]))
    problems.extend(semantic_problems(data))
    problems.sort(key=lambda problem: document_order(data, problem.path))
    return (None if problems else config), problems


def parse_config(
    text: str, env: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'proxmox' key")
    config, problems = validate(raw, os.environ if env is None else env)
    if config is None:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        lines = "\n".join(str(p) for p in problems)
        raise ConfigError(f"{source}: invalid configuration, {count}:\n{lines}", problems)
    return config


def config_path(cli_path: str | None) -> Path:
    return Path(cli_path or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(cli_path: str | None = None) -> Config:
    path = config_path(cli_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    return parse_config(text, source=str(path))
