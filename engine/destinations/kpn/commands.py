"""``courier kpn authorize``: KPN's three-legged OAuth, with the redirect received on loopback.

Prints the authorization URL (with a fresh random ``state``) for the operator to open, waits
for KPN's redirect on the destination's loopback ``redirect_uri``, checks the state, trades
the code for an access token and stores it encrypted in the store, where a running engine
picks it up within its token refresh interval. ``--auto`` follows the URL itself: only the
sandbox approves without a login page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from engine.commands.store_options import add_store_arguments, describe_store

DEFAULT_TIMEOUT_S = 300.0

SUMMARY = "KPN Healthcare Messenger: authorize (OAuth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    authorize = actions.add_parser("authorize", help="authorise Courier with KPN and store the token")
    authorize.add_argument("channel", type=Path, help="the channel file of the KPN destination")
    authorize.add_argument("destination", help="the KPN destination's name in that channel")
    authorize.add_argument(
        "--auto", action="store_true", help="follow the authorization URL here (the sandbox approves at once)"
    )
    authorize.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to wait for the redirect (default: {DEFAULT_TIMEOUT_S:g})",
    )
    add_store_arguments(authorize)


def run(args: argparse.Namespace) -> int:
    import requests

    from engine.commands.credentials import find_destination, save_token
    from engine.destinations.base import DestinationError
    from engine.destinations.kpn.destination import KpnDestination
    from engine.destinations.kpn.tokens import token_key

    found = find_destination("kpn authorize", args.channel, args.destination, "kpn")
    if found is None:
        return 2
    _, config = found
    if not config.settings.get("client_secret"):
        print("courier kpn authorize: the destination has no client_secret", file=sys.stderr)
        return 2
    destination = KpnDestination(config.settings, requests.Session())
    try:
        token = authorize(destination, auto=args.auto, timeout_s=args.timeout, show=print)
    except DestinationError as error:
        print(f"courier kpn authorize: KPN did not authorise Courier: {error}", file=sys.stderr)
        return 1
    save_token(args, token_key(config.settings["client_id"]), token)
    print(
        f"KPN authorised Courier for client {config.settings['client_id']}; the token is stored "
        f"in {describe_store(args.store)} (a running engine picks it up within a minute)"
    )
    return 0


def authorize(destination, *, auto: bool, timeout_s: float, show: Callable[[str], None]) -> str:
    """The access token of one authorization of a :class:`KpnDestination`. Blocking.

    Raises DestinationError when KPN refuses, the state does not match, or nothing comes back.
    """
    from engine.destinations.kpn.oauth import RedirectReceiver, new_state

    state = new_state()
    receiver = RedirectReceiver.for_redirect_uri(destination.settings["redirect_uri"], state)
    url = destination.authorization_url(state)
    if not auto:
        show(f"Open this URL, sign in to KPN and approve Courier:\n\n  {url}\n")
        show(f"Waiting for the redirect on {receiver.redirect_uri} ...")
    else:
        _follow(destination, url, receiver)
    code = receiver.wait(timeout_s)
    return destination.exchange_code(code).access_token


def _follow(destination, url: str, receiver) -> None:
    """Open the authorization URL as a browser would; a refusal without a redirect is an error."""
    import requests

    from engine.destinations.base import DestinationError

    try:
        response = destination.session.get(url, timeout=destination.timeout, verify=destination.verify)
    except requests.RequestException as exc:
        receiver.close()
        raise DestinationError(f"cannot reach the KPN authorization URL: {type(exc).__name__}") from None
    if response.status_code >= 400:
        receiver.close()
        raise DestinationError(f"the authorization request was refused: HTTP {response.status_code}")
