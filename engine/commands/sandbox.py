"""``courier sandbox``: the four vendor sandboxes on loopback, on their own."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument(
        "--https",
        type=Path,
        metavar="DIR",
        help="serve HTTPS with a throwaway CA and certificate written to DIR "
        "(clients verify with DIR/ca.pem)",
    )


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from engine.commands.exits import serve
    from engine.sandbox import start_sandboxes
    from engine.sandbox.certs import make_certificates

    tls = make_certificates(args.https).server_tls() if args.https else None

    def started(sandboxes) -> None:
        for name, url in sandboxes.api_urls().items():
            print(f"{name:10} {url}", flush=True)
        print("control API: <base>/_sandbox/state, /_sandbox/faults, /_sandbox/reset", flush=True)

    return serve(
        reactor, lambda: start_sandboxes(reactor, host=args.host, tls=tls).addCallback(started), "sandbox"
    )
