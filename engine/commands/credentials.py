"""What the credential commands share: find a channel's destination, keep its token."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def find_destination(command: str, channel_file: Path, name: str, kind: str):
    """The ``(channel, destination config)`` named on the command line, or None (said why)."""
    from engine.channel.check import load_channels
    from engine.errors import ConfigError

    try:
        (channel,) = load_channels([channel_file])
    except (ConfigError, ValueError) as error:
        print(f"courier {command}: {channel_file}: {error}", file=sys.stderr)
        return None
    config = next((d for d in channel.destinations if d.name == name), None)
    if config is None or config.type != kind:
        print(
            f"courier {command}: channel {channel.name} has no {kind} destination {name!r}", file=sys.stderr
        )
        return None
    return channel, config


def save_token(args: argparse.Namespace, key: str, token: str) -> None:
    """Store a vendor token encrypted, where a running engine picks it up (within 30 s)."""
    from engine.delivery.tokens import NAMESPACE
    from engine.store import Database, load_cipher

    db = Database.open(args.store, load_cipher(key_file=args.key_file))
    try:
        with db.transaction():
            db.kv_put(NAMESPACE, key, token.encode())
    finally:
        db.close()
