"""``courier conneqt exchange``: trade a new toolbar access code for an AccessToken.

The engine exchanges a destination's ``access_code`` by itself when it has no token. This
command replaces a stored token (after a 401, or when a practice issues a new code) without
restarting: a running engine picks the new token up within 30 seconds. The access code is
read from an environment variable, never from the command line (other users can see that).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.commands.store_options import add_store_arguments, describe_store

SUMMARY = "conneQt: exchange a new access code for an AccessToken"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    exchange = actions.add_parser("exchange", help="exchange an access code and store the AccessToken")
    exchange.add_argument("channel", type=Path, help="the channel file of the conneQt destination")
    exchange.add_argument("destination", help="the conneQt destination's name in that channel")
    exchange.add_argument(
        "--access-code-env",
        default="CONNEQT_ACCESS_CODE",
        metavar="VAR",
        help="environment variable holding the access code (default: CONNEQT_ACCESS_CODE)",
    )
    add_store_arguments(exchange)


def run(args: argparse.Namespace) -> int:
    import requests

    from engine.commands.credentials import find_destination, save_token
    from engine.destinations.base import DestinationError
    from engine.destinations.conneqt.destination import ConneqtDestination
    from engine.destinations.conneqt.tokens import token_key

    code = os.environ.get(args.access_code_env, "").strip()
    if not code:
        print(f"courier conneqt exchange: set ${args.access_code_env} to the access code", file=sys.stderr)
        return 2
    found = find_destination("conneqt exchange", args.channel, args.destination, "conneqt")
    if found is None:
        return 2
    channel, config = found
    try:
        token = ConneqtDestination(config.settings, requests.Session()).exchange_access_code(code)
    except DestinationError as error:
        print(f"courier conneqt exchange: conneQt refused the access code: {error}", file=sys.stderr)
        return 1
    save_token(args, token_key(channel.name, config.name), token)
    print(f"conneQt AccessToken stored for {channel.name}/{config.name} in {describe_store(args.store)}")
    return 0
