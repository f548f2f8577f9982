"""``courier stats [--since HOURS]``: the numbers of a dashboard, per channel.

How many messages each channel received, filtered out and saw resent; where each destination's
deliveries stand (the queue states); and what waits in the outbox for the hospital. Counts
only, never PHI. ``--since`` counts what arrived in the last hours only. Destinations held
by a set-up error (wrong key, URL, DNS, TLS) are listed with the reason.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

from engine.commands.store_options import add_store_arguments, open_database, print_held

MESSAGE_COLUMNS = ("RECEIVED", "FILTERED", "ACK_RECEIVED", "duplicates")
DELIVERY_COLUMNS = ("QUEUED", "SENDING", "SENT", "DELIVERED", "READ", "ERROR", "CANCELLED")
OUTBOX_COLUMNS = ("PENDING", "SENT", "ERROR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=float, metavar="HOURS", help="only what arrived in the last HOURS")
    add_store_arguments(parser)


def run(args: argparse.Namespace) -> int:
    db = open_database(args)
    try:
        counts = db.counts(None if args.since is None else time.time() - args.since * 3600)
        held = db.held_destinations()
    finally:
        db.close()
    messages: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, state, count, duplicates in counts.messages:
        messages[channel][state] = count
        messages[channel]["duplicates"] = messages[channel].get("duplicates", 0) + (duplicates or 0)
    deliveries: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, destination, state, count in counts.deliveries:
        deliveries[f"{channel} → {destination}"][state] = count
    outbox: dict[str, dict[str, int]] = defaultdict(dict)
    for channel, state, count in counts.outbox:
        outbox[channel][state] = count
    for title, rows, columns in (
        ("messages", messages, MESSAGE_COLUMNS),
        ("deliveries", deliveries, DELIVERY_COLUMNS),
        ("outbox to the hospital", outbox, OUTBOX_COLUMNS),
    ):
        print_table(title, rows, columns)
    print_held(held)
    return 0


def print_table(title: str, rows: dict[str, dict[str, int]], columns: tuple[str, ...]) -> None:
    width = max([len(title), *map(len, rows)])
    print(f"{title:{width}}  " + "  ".join(f"{c:>{max(len(c), 6)}}" for c in columns))
    for name in sorted(rows):
        cells = "  ".join(f"{rows[name].get(c, 0):>{max(len(c), 6)}}" for c in columns)
        print(f"{name:{width}}  {cells}")
    print()
