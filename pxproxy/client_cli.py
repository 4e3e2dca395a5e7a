"""API-client commands against a running daemon: `pxproxy ls | lookup | routes | stats | journal |
tail | exec | wake | start | stop | shutdown | reboot | suspend | resume`.

Every command that takes a guest accepts any ref: name, vmid, node/vmid or cluster:vmid. The API
is `--api` (else $PXPROXY_API, else http://127.0.0.1:8081), the token `--token` (else
$PXPROXY_TOKEN). Exit codes: 0 done, 1 the API answered with an error (its problem document's
`detail` is printed, and for an ambiguous ref the candidates), 2 the API could not be reached or
the connection broke, 130 interrupted; `exec` exits with the command's own status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from .client_http import DEFAULT_API, EXIT_INTERRUPTED, ApiClient, CliError
from .client_power import POWER_ACTIONS
from .config.durations import parse_duration
from .runtime import run

REF_HELP = "guest: name | vmid | node/vmid | cluster:vmid"
_DIGITS = frozenset("0123456789")

Work = Callable[[ApiClient], Coroutine[Any, Any, int]]


# -- the command line ---------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the client commands on the main parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        metavar="URL",
        help=f"the daemon's API (default: $PXPROXY_API, else {DEFAULT_API})",
    )
    common.add_argument("--token", help="bearer token of the API (default: $PXPROXY_TOKEN)")

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str, **kw: Any) -> Any:
        cmd = sub.add_parser(name, parents=[common], help=text, description=text, **kw)
        cmd.set_defaults(func=func)
        return cmd

    ls = add("ls", cmd_ls, "list the guests: name, vmid, node, type, status, IPs, uptime")
    for key in ("cluster", "node", "type", "status", "tag"):
        ls.add_argument(f"--{key}", help=f"only guests with this {key}")
    ls.add_argument("--json", action="store_true", help="the API's JSON instead of a table")

    lookup = add("lookup", cmd_lookup, "which guest (or node) has this IP address or host name")
    lookup.add_argument("query", metavar="IP|HOST", help="an IP address, else a host name")
    lookup.add_argument("--json", action="store_true", help="the API's JSON")

    routes = add("routes", cmd_routes, "the configured routes and the wake state of each")
    routes.add_argument("--json", action="store_true", help="the API's JSON instead of a table")

    stats = add(
        "stats",
        cmd_stats,
        "live load of a guest, one line per second",
        epilog="Streams status, CPU, memory, network and disk I/O.",
    )
    stats.add_argument("ref", help=REF_HELP)
    stats.add_argument("--once", action="store_true", help="one line, then exit")
    stats.add_argument("--json", action="store_true", help="NDJSON with raw numbers and rates")

    journal = add(
        "journal",
        cmd_journal,
        "follow the journal of a guest, or of a node",
        epilog="Prints the last lines, then follows (Ctrl-C to stop). REF is a guest first; "
        "a name no guest has but a node has means the node. `NODE VMID` works as NODE/VMID.",
    )
    journal.add_argument("ref", metavar="REF", help=REF_HELP + ", or a node")
    journal.add_argument("vmid", nargs="?", type=int, help=argparse.SUPPRESS)
    _node_flag(journal)
    journal.add_argument(
        "-n", "--lines", type=int, dest="limit", metavar="N", help="lines of history (1..1000)"
    )
    journal.add_argument(
        "-u",
        "--unit",
        action="append",
        dest="units",
        default=[],
        metavar="UNIT",
        help="only this systemd unit (repeatable)",
    )
    journal.add_argument("--no-follow", action="store_true", help="print the history and exit")

    tail = add(
        "tail",
        cmd_tail,
        "follow files in a guest, or on a node",
        epilog="REF is a guest first; a name no guest has but a node has means the node.",
    )
    tail.add_argument("ref", metavar="REF", help=REF_HELP + ", or a node")
    tail.add_argument("files", nargs="+", metavar="FILE", help="absolute path (up to 8)")
    _node_flag(tail)
    tail.add_argument(
        "-n", "--lines", type=int, dest="limit", metavar="N", help="lines of history (default 10)"
    )
    tail.add_argument("--no-follow", action="store_true", help="print the last lines and exit")

    exec_ = add(
        "exec",
        cmd_exec,
        "run a command in a guest; exits with its status",
        usage="%(prog)s [--api URL] [--token TOKEN] REF -- ARGV...",
        epilog="Streams the output. `NODE VMID -- ARGV` works as NODE/VMID.",
    )
    exec_.add_argument("ref", metavar="REF", help=REF_HELP)
    exec_.add_argument("argv", nargs=argparse.REMAINDER, help="the command and its arguments")
    exec_.set_defaults(exec_parser=exec_)

    wake = add(
        "wake",
        cmd_wake,
        "wake a guest through idle-watch and follow it to ready",
        epilog="Needs a route with idle: for the guest; prints each stage as it happens.",
    )
    wake.add_argument("ref", metavar="REF", help=REF_HELP)

    for action in POWER_ACTIONS:
        cmd = add(action, cmd_power, f"{action} a guest (a Proxmox task)")
        cmd.add_argument("ref", metavar="REF", help=REF_HELP)
        cmd.add_argument("--wait", action="store_true", help="wait for the task and show it")
        cmd.add_argument(
            "--timeout",
            type=_seconds,
            metavar="DURATION",
            help="with --wait: give up after this long (default 120s, at most 15m)",
        )


def _node_flag(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--node", action="store_true", help="REF is a node (for a node named like a guest)"
    )


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- the commands -------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from .client_inventory import ls

    filters = [
        (k, v) for k in ("cluster", "node", "type", "status", "tag") if (v := getattr(args, k))
    ]
    return _main(args, lambda c: ls(c, filters, raw=args.json))


def cmd_lookup(args: argparse.Namespace) -> int:
    from .client_inventory import lookup

    return _main(args, lambda c: lookup(c, args.query, raw=args.json))


def cmd_routes(args: argparse.Namespace) -> int:
    from .client_inventory import routes

    return _main(args, lambda c: routes(c, raw=args.json))


def cmd_stats(args: argparse.Namespace) -> int:
    from .client_streams import stats

    return _main(args, lambda c: stats(c, args.ref, once=args.once, raw=args.json))


def cmd_journal(args: argparse.Namespace) -> int:
    from .client_streams import journal

    ref = args.ref if args.vmid is None else f"{args.ref}/{args.vmid}"
    return _main(
        args,
        lambda c: journal(
            c,
            ref,
            node=args.node,
            limit=args.limit,
            units=args.units,
            follow=not args.no_follow,
        ),
    )


def cmd_tail(args: argparse.Namespace) -> int:
    from .client_streams import tail

    return _main(
        args,
        lambda c: tail(
            c, args.ref, args.files, node=args.node, limit=args.limit, follow=not args.no_follow
        ),
    )


def cmd_exec(args: argparse.Namespace) -> int:
    from .client_streams import exec_

    ref, rest = _legacy_node_vmid(args.ref, list(args.argv))
    argv = _own_options(args, rest)
    if not argv:
        args.exec_parser.error("give the command after --, e.g. pxproxy exec wiki -- uptime")
    return _main(args, lambda c: exec_(c, ref, argv))


def cmd_wake(args: argparse.Namespace) -> int:
    from .client_power import wake

    return _main(args, lambda c: wake(c, args.ref))


def cmd_power(args: argparse.Namespace) -> int:
    from .client_power import power

    action = args.command
    if args.timeout is not None and not args.wait:
        print(f"pxproxy {action}: --timeout needs --wait", file=sys.stderr)
        return 2
    return _main(args, lambda c: power(c, action, args.ref, wait=args.wait, timeout_s=args.timeout))


def _legacy_node_vmid(ref: str, rest: list[str]) -> tuple[str, list[str]]:
    """`exec NODE VMID -- ...`, the old spelling, as NODE/VMID: a command named by digits
    alone is no command, so a vmid after a node name is unambiguous."""
    plain = ref and not _DIGITS.issuperset(ref) and "/" not in ref and ":" not in ref
    if plain and rest and rest[0] and _DIGITS.issuperset(rest[0]) and len(rest[0]) <= 9:
        return f"{ref}/{rest[0]}", rest[1:]
    return ref, rest


def _own_options(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """The command's argv from what follows the ref. argparse hands over everything after it
    untouched (so a literal "--" or "-n" of the command survives); our own --api/--token
    may still stand before the first "--" and are taken from there."""
    if "--" not in rest:
        return rest
    split = rest.index("--")
    head, tail = rest[:split], rest[split + 1 :]
    found: dict[str, str] = {}
    i = 0
    while i < len(head):
        name, eq, value = head[i].partition("=")
        if name not in ("--api", "--token"):
            return rest  # not ours: all of it is the command, "--" included
        if not eq:
            if i + 1 >= len(head):
                return rest
            i += 1
            value = head[i]
        found[name[2:]] = value
        i += 1
    for key, value in found.items():
        setattr(args, key, value)
    return tail


# -- running a command --------------------------------------------------------------------------


def _main(args: argparse.Namespace, work: Work) -> int:
    name = args.command

    async def session() -> int:
        async with ApiClient(args.api, args.token) as client:
            return await work(client)

    try:
        code: int = run(session())
    except CliError as exc:
        print(f"pxproxy {name}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        # Leaving the session closes the connection, which ends the stream on the daemon.
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `pxproxy journal ... | head`: the reader left; stop quietly.
        _silence_stdout()
        return 0
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
