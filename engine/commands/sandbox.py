"""``courier sandbox``: the four vendor sandboxes and the ``http`` receiver on loopback, on their own.

They accept the same random credentials as ``courier run --sandbox``
(``var/sandbox/credentials.json``, made on first use); the path is printed at start.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine import logs


def sandbox_ports(text: str) -> dict[str, int]:
    """``qliq=28441,kpn=0``: ports for the sandboxes named (0 = a free one); an argparse type.

    The others keep :data:`~courier_sandbox.DEFAULT_PORTS`, the README's ports, so a second
    copy (a test, a benchmark) can run beside the demo."""
    from courier_sandbox import DEFAULT_PORTS

    ports: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, port = item.partition("=")
        if name not in DEFAULT_PORTS or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected NAME=PORT with NAME one of {', '.join(DEFAULT_PORTS)}"
            )
        ports[name] = int(port)
    return ports


def add_ports_argument(parser: argparse.ArgumentParser, flag: str) -> None:
    parser.add_argument(
        flag,
        type=sandbox_ports,
        default={},
        metavar="NAME=PORT,…",
        help="other ports for the sandboxes, as NAME=PORT pairs named as `courier sandbox` prints "
        "them, e.g. NAME=28441,OTHER=0 (0: a free port; the others keep 18441-18445)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    add_ports_argument(parser, "--ports")
    parser.add_argument(
        "--https",
        type=Path,
        metavar="DIR",
        help="serve HTTPS with a throwaway CA and certificate written to DIR "
        "(clients verify with DIR/ca.pem)",
    )
    logs.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from courier_sandbox import start_sandboxes
    from courier_sandbox.certs import make_certificates
    from courier_sandbox.credentials import CREDENTIALS_FILE, CredentialsError, load_or_create
    from engine.commands.exits import serve
    from engine.errors import ConfigError

    try:
        credentials = load_or_create(CREDENTIALS_FILE)
    except CredentialsError as error:  # the CLI's one line for an error made on purpose
        raise ConfigError(str(error)) from None
    tls = make_certificates(args.https).server_tls() if args.https else None

    def started(sandboxes) -> None:
        for name, url in sandboxes.api_urls().items():
            print(f"{name:10} {url}", flush=True)
        print(f"credentials: {CREDENTIALS_FILE.resolve()} (secrets for the channels' variables)", flush=True)
        print("control API: <base>/_sandbox/state, /_sandbox/faults, /_sandbox/reset", flush=True)

    return serve(
        reactor,
        lambda: start_sandboxes(
            reactor, host=args.host, ports=args.ports, tls=tls, credentials=credentials
        ).addCallback(started),
        "sandbox",
    )
