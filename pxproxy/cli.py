"""Command line: `pxproxy run | check | demo | lab`, and the API clients of client_cli.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .audit.command import add_audit_command
from .client_cli import add_commands as add_client_commands
from .client_integrations import add_commands as add_integration_commands
from .config.durations import parse_duration
from .config.loader import ConfigError, config_path, load_config
from .listeners.bind_errors import ListenError
from .log_format import LOG_FORMATS
from .runtime import run, setup_logging

LOG_LEVELS = ("debug", "info", "warning", "error")


def _cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    config = load_config(args.config)
    setup_logging(args.log_level or config.log_level, args.log_format)
    daemon = Daemon(config, config_path=config_path(args.config), log_format=args.log_format)
    run(daemon.run_until_signalled())
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check

    config = load_config(args.config)
    setup_logging("warning")
    return run(check(config, sys.stdout))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_LOG_PREFIX, run_demo
    from .lab.run import LabSetupError

    # The daemon's log goes to the terminal with the instructions, each line marked as its.
    setup_logging(args.log_level, args.log_format, stream=sys.stdout, prefix=DEMO_LOG_PREFIX)
    try:
        run(run_demo(args.proxy, args.api, args.token, sys.stdout, dns=args.dns))
    except LabSetupError as exc:
        print(f"pxproxy demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pxproxy demo: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    from .lab.run import LabSetupError, run_lab

    setup_logging(args.log_level, args.log_format)
    try:
        run(
            run_lab(args.listen, args.guests, args.nodes, args.boot_time, args.scenario, sys.stdout)
        )
    except LabSetupError as exc:
        print(f"pxproxy lab: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"pxproxy lab: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr
        )
        return 1
    return 0


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_log_flags(cmd: argparse.ArgumentParser, default_level: str | None) -> None:
    where = f"default {default_level}" if default_level else "default: log_level of the config"
    cmd.add_argument(
        "--log-level", choices=LOG_LEVELS, default=default_level, help=f"log level ({where})"
    )
    cmd.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text, or json: one object per line (default %(default)s)",
    )


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
        if name == "run":
            _add_log_flags(cmd, None)
        cmd.set_defaults(func=func)
    demo = sub.add_parser(
        "demo",
        help="the lab and the daemon together, with a generated config",
        description="Start a simulated Proxmox cluster and pxproxy against it; print what to try.",
    )
    demo.add_argument(
        "--proxy", default="127.0.0.1:8080", help="proxy listener (default %(default)s)"
    )
    demo.add_argument("--api", default="127.0.0.1:8081", help="API listener (default %(default)s)")
    demo.add_argument("--token", help="API bearer token (default: a random one, printed once)")
    demo.add_argument(
        "--dns",
        help="DNS responder (default 127.0.0.1:5353, or a free port when mDNS has 5353)",
    )
    _add_log_flags(demo, "info")
    demo.set_defaults(func=_cmd_demo)
    lab = sub.add_parser(
        "lab",
        help="the simulated Proxmox cluster alone",
        description="Serve a Proxmox-compatible API whose guests answer on loopback addresses.",
    )
    lab.add_argument("--listen", default="127.0.0.1:8006", help="address (default %(default)s)")
    lab.add_argument("--guests", type=int, default=8, help="guests (default %(default)s)")
    lab.add_argument("--nodes", type=int, default=2, help="nodes (default %(default)s)")
    lab.add_argument(
        "--boot-time", type=_seconds, default=2.0, help="how long a start takes (default 2s)"
    )
    lab.add_argument("--scenario", help="YAML/JSON file with nodes and guests")
    _add_log_flags(lab, "warning")
    lab.set_defaults(func=_cmd_lab)
    add_audit_command(sub)  # audit verify
    add_client_commands(sub)  # ls, lookup, routes, stats, journal, tail, exec, wake, power
    add_integration_commands(sub)  # integrations KIND, inventory --list | --host H
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ConfigError, ListenError) as exc:
        # An operator's mistake: what to fix, with its key path; never a traceback.
        print(f"pxproxy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
