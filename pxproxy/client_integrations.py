"""`pxproxy integrations traefik|caddy|nginx|haproxy` (the recipe for the config, printed) and
`pxproxy inventory --list | --host H` (Ansible's dynamic-inventory protocol, against a running
daemon), so that an inventory script is just:

    #!/bin/sh
    exec pxproxy inventory "$@"

`inventory` exits 1 on any failure (daemon unreachable, an error answer), with the reason on
stderr: Ansible shows it and gives up on the source.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .client_http import DEFAULT_API, ApiClient, CliError
from .runtime import run

EXIT_FAILED = 1
INVENTORY_PATH = "/integrations/ansible-inventory"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .config.loader import config_path
    from .integrations.recipes import KINDS

    text = "print the configuration of Traefik, Caddy, nginx or HAProxy for this config"
    integrations = sub.add_parser(
        "integrations",
        help=text,
        description=text,
        epilog="The output is the exact recipe the end-to-end tests run against the real program.",
    )
    integrations.add_argument("kind", choices=KINDS, help="which proxy")
    integrations.add_argument(
        "-c", "--config", help=f"config file (default: $PXPROXY_CONFIG, else {config_path(None)})"
    )
    integrations.add_argument(
        "--listen",
        metavar="ADDR",
        help="where the proxy itself listens, e.g. :443 or 0.0.0.0:80 (default :80)",
    )
    integrations.set_defaults(func=cmd_integrations)

    text = "Ansible dynamic inventory of the guests, from a running daemon"
    inventory = sub.add_parser(
        "inventory",
        help=text,
        description=text,
        epilog='Use as an inventory script: #!/bin/sh  exec pxproxy inventory "$@"',
    )
    which = inventory.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="every group and host (with _meta)")
    which.add_argument("--host", metavar="H", help="one host's variables ({} if unknown)")
    inventory.add_argument(
        "--api", metavar="URL", help=f"the daemon's API (default: $PXPROXY_API, else {DEFAULT_API})"
    )
    inventory.add_argument("--token", help="bearer token of the API (default: $PXPROXY_TOKEN)")
    inventory.set_defaults(func=cmd_inventory)


def cmd_integrations(args: argparse.Namespace) -> int:
    from .config.loader import config_path, load_config
    from .integrations.recipes import RecipeError, recipe

    config = load_config(args.config)
    try:
        text = recipe(
            args.kind, config, config_path=str(config_path(args.config)), listen=args.listen
        )
    except RecipeError as exc:
        print(f"pxproxy integrations {args.kind}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    params = [("host", args.host)] if args.host is not None else []

    async def fetch() -> Any:
        async with ApiClient(args.api, args.token) as client:
            return await client.json("GET", INVENTORY_PATH, params=params)

    try:
        doc = run(fetch())
    except CliError as exc:
        print(f"pxproxy inventory: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(doc, dict):
        message = f"the API answered {INVENTORY_PATH} with no object"
        print(f"pxproxy inventory: {message}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0
