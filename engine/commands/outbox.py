"""``courier outbox list|show|skip``: the HL7 messages waiting to go back to the hospital.

Each channel's outbox (status messages, vendor replies, inbound documents) is sent strictly in
order, and an item the hospital's listener keeps refusing is retried with backoff for as long
as it takes, holding every item behind it. ``skip`` is the operator's way out: the item becomes
ERROR with the reason given, and the channel's later items go. A running engine moves on at
its next attempt (at most the backoff's cap, 300 s, later). The skip is recorded among the
operators' actions, as the console's are, with the operator named ``cli:`` and the login name.
Payloads are HL7 with PHI, so they are printed only with ``show --body``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.commands.store_options import (
    add_list_action,
    add_store_arguments,
    cli_operator,
    hl7_lines,
    open_database,
    when,
)
from engine.message.display import printable

if TYPE_CHECKING:
    from engine.store import Database, OutboxItem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add_list_action(actions, "newest items first (no payloads)", "PENDING, SENT or ERROR")
    show = actions.add_parser("show", help="one item, with its last error")
    show.add_argument("id", type=int)
    show.add_argument("--body", action="store_true", help="also print the HL7 message (PHI)")
    add_store_arguments(show)
    skip = actions.add_parser("skip", help="give up on a PENDING item so the channel's later items go")
    skip.add_argument("id", type=int)
    skip.add_argument("--reason", required=True, help="why, kept with the item (no PHI, please)")
    add_store_arguments(skip)


def run(args: argparse.Namespace) -> int:
    db = open_database(args, readonly=args.action != "skip")
    try:
        if args.action == "list":
            print(
                f"{'id':>6}  {'channel':20}  {'seq':>5}  {'state':8}  {'tries':>5}  "
                f"{'next attempt':25}  control id"
            )
            for item in db.list_outbox(args.channel, args.state, args.limit):
                next_attempt = when(item.next_attempt_at) if item.state == "PENDING" else "-"
                print(
                    f"{item.id:>6}  {item.channel:20}  {item.seq:>5}  {item.state:8}  {item.attempts:>5}  "
                    f"{next_attempt:25}  {printable(item.control_id)}"
                )
            return 0
        item = db.get_outbox_item(args.id, with_payload=args.action == "show" and args.body)
        if item is None:
            print(f"courier outbox: no outbox item {args.id}")
            return 1
        if args.action == "skip":
            return _skip(db, item, args.reason)
        for name in ("id", "channel", "target", "seq", "control_id", "state", "attempts"):
            print(f"{name:16} {printable(str(getattr(item, name)))}")
        print(f"{'created_at':16} {when(item.created_at)}")
        print(f"{'last_error':16} {item.last_error or '-'}")
        if item.payload is not None:
            print()
            print(hl7_lines(item.payload))
        return 0
    finally:
        db.close()


def _skip(db: Database, item: OutboxItem, reason: str) -> int:
    from engine.store.base import skipped_by  # here, not at import: building the parser stays fast

    operator = cli_operator()
    with db.transaction():
        skipped = db.outbox_skip(item.id, skipped_by(operator, reason), by=operator)
    if not skipped:
        print(f"courier outbox: item {item.id} is {item.state}, not PENDING; nothing to skip")
        return 1
    print(
        f"courier outbox: item {item.id} ({printable(item.control_id)}) is now ERROR; "
        "the channel's later items go next"
    )
    return 0
