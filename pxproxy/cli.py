"""Command line: `pxproxy run | check`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .config.loader import ConfigError, config_path, load_config
from .runtime import run, setup_logging


def _cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    config = load_config(args.config)
    setup_logging(config.log_level)
    run(Daemon(config).run_until_signalled())
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check

    config = load_config(args.config)
    setup_logging("warning")
    return run(check(config, sys.stdout))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pxproxy", description="Proxmox VE companion for reverse proxies."
    )
    parser.add_argument("--version", action="version", version=f"pxproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, text in (
        ("run", _cmd_run, "run the daemon"),
        ("check", _cmd_check, "validate the config, connect to each cluster, print a summary"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument(
            "-c",
            "--config",
            help=f"config file (default: $PXPROXY_CONFIG, else {config_path(None)})",
        )
        cmd.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"pxproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
