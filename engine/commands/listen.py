"""``courier listen``: play the hospital side — print every message received and ACK it.

Answers as a well-behaved HL7 receiver would: AA (or CA in enhanced mode) with MSA-2 the
received MSH-10, and no answer to an ACK unless its MSH-15 asks for a commit ACK.
"""

from __future__ import annotations

import argparse
import sys

from engine import logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("endpoint", help="Twisted server endpoint, e.g. tcp:2590:interface=127.0.0.1")
    parser.add_argument("--summary", action="store_true", help="print one line per message, not the message")
    logs.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from twisted.internet import endpoints, reactor

    from engine.commands.exits import serve
    from engine.listener import PrintingReceiver
    from engine.mllp.server import MLLPServerFactory

    receiver = PrintingReceiver(reactor, out=sys.stdout, summary=args.summary)
    factory = MLLPServerFactory("listen", receiver, reactor)

    def start():
        d = endpoints.serverFromString(reactor, args.endpoint).listen(factory)
        return d.addCallback(lambda port: print(f"listening on {port.getHost()}", file=sys.stderr))

    return serve(reactor, start, "listen")
