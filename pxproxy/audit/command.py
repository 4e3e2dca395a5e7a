"""`pxproxy audit verify FILE...`: check the hash chain of audit files, oldest first."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .chain import START
from .verify import ChainBrokenError, verify

EXIT_BROKEN = 1
EXIT_UNREADABLE = 2


def add_audit_command(sub: Any) -> None:
    """Register `audit verify` on the top-level subparsers."""
    audit = sub.add_parser("audit", help="the audit file", description="Work with audit files.")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify_cmd = commands.add_parser(
        "verify",
        help="check the hash chain of audit files",
        description=(
            "Check the hash chain of audit files. Give rotated files oldest first "
            "(audit.jsonl.2 audit.jsonl.1 audit.jsonl): each must continue the one before. "
            "Exit 0 when intact, 1 at the first broken line, 2 when a file cannot be read."
        ),
    )
    verify_cmd.add_argument("files", nargs="+", metavar="FILE")
    verify_cmd.add_argument(
        "--continues",
        metavar="SEQ:HASH",
        help="the chain head the first file continues (as pxproxy logged it, or as verify "
        "printed for the older file): needed when the older files are not given",
    )
    verify_cmd.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        result = verify(args.files)
    except ChainBrokenError as exc:
        print(f"pxproxy audit verify: {exc}", file=sys.stderr)
        return EXIT_BROKEN
    except OSError as exc:
        print(
            f"pxproxy audit verify: cannot read {exc.filename}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    if result.start != START:
        continued = f"{result.start.seq}:{result.start.hash}"
        if args.continues != continued:
            # Without the older file, lines deleted from the start look like a rotation.
            print(
                f"pxproxy audit verify: {args.files[0]}:1: the chain does not start here: its "
                f"first line continues seq {result.start.seq}, hash {result.start.hash}. "
                "Lines before it were deleted, or the file continues a rotated one: give the "
                f"older files first, or --continues {continued} if that is the head pxproxy "
                "logged when it rotated",
                file=sys.stderr,
            )
            return EXIT_BROKEN
    origin = (
        "a new chain"
        if result.start == START
        else f"continuing seq {result.start.seq}, hash {result.start.hash}"
    )
    files = f"{len(args.files)} files" if len(args.files) > 1 else args.files[0]
    print(f"{files}: {result.lines} lines, chain intact ({origin})")
    print(f"last line: seq {result.head.seq}, hash {result.head.hash}")
    return 0
