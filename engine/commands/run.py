"""``courier run``: start every channel's listener and queue from the channel files."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engine.commands.store_options import add_store_arguments

log = logging.getLogger("engine.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        default=[Path("channels")],
        help="channel files or directories (default: channels/)",
    )
    add_store_arguments(parser)
    parser.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="full: fsync every commit (default); normal: survives a killed process, not a power cut",
    )
    parser.add_argument(
        "--hold-deliveries",
        action="store_true",
        help="receive, store and ACK, but keep every delivery QUEUED (maintenance, benchmarks)",
    )
    parser.add_argument(
        "--sandbox", action="store_true", help="also run the four vendor sandboxes on loopback (the demo)"
    )


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    from engine.channel.check import load_channels
    from engine.errors import ConfigError
    from engine.service import build_engine
    from engine.store import Cipher, SQLiteStore, load_or_create_key

    try:
        channels = load_channels(list(args.paths))
    except ConfigError as error:
        print(f"courier run: the channel files have problems:\n{error}", file=sys.stderr)
        return 2
    if not channels:
        print("courier run: no channel files found", file=sys.stderr)
        return 2
    store = SQLiteStore(
        args.store,
        reactor=reactor,
        cipher=Cipher(load_or_create_key(key_file=args.key_file)),
        durability=args.durability,
    )
    engine = build_engine(reactor, channels, store, hold_deliveries=args.hold_deliveries)

    def start() -> None:
        d = store.start()
        if args.sandbox:
            from engine.sandbox import start_sandboxes

            d.addCallback(lambda _: start_sandboxes(reactor))
        d.addCallback(lambda _: engine.start())
        d.addCallback(lambda _: _announce(channels))
        d.addErrback(_fatal, reactor)

    def stop():
        d = engine.stop()
        d.addBoth(lambda _: store.close())
        return d

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 0


def _announce(channels) -> None:
    for channel in channels:
        if channel.enabled:
            log.warning("channel %s listening on %s", channel.name, channel.source.listen)
    print("courier: running; Ctrl-C to stop", file=sys.stderr, flush=True)


def _fatal(failure, reactor) -> None:
    print(f"courier run: cannot start: {failure.getErrorMessage()}", file=sys.stderr)
    log.error("start-up failed", exc_info=failure.value)
    reactor.stop()
