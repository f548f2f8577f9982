"""``courier messages list|show``: browse the store without printing PHI unless asked."""

from __future__ import annotations

import argparse

from engine.commands.store_options import add_list_action, add_store_arguments, hl7_lines, open_database, when
from engine.message.display import printable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    add_list_action(actions, "newest messages first (no bodies)", "RECEIVED, FILTERED or ACK_RECEIVED")
    show = actions.add_parser("show", help="one message by id or control id")
    show.add_argument("ref", help="message id (a number) or MSH-10 control id")
    show.add_argument("--body", action="store_true", help="also print the message body (PHI)")
    add_store_arguments(show)


def run(args: argparse.Namespace) -> int:

    db = open_database(args)
    try:
        if args.action == "list":
            messages = db.list_messages(channel=args.channel, state=args.state, limit=args.limit)
            print(f"{'id':>6}  {'received':25}  {'channel':20}  {'type':8}  {'state':12}  control id")
            for m in messages:
                print(
                    f"{m.id:>6}  {when(m.received_at):25}  {m.channel:20}  {printable(m.message_type):8}  "
                    f"{m.state:12}  {printable(m.control_id)}"
                )
            return 0
        ref = int(args.ref) if args.ref.isdigit() else args.ref
        message = db.get_message(ref, with_body=args.body)
        if message is None:
            print(f"courier messages: no message {args.ref!r}")
            return 1
        for name in (
            "id",
            "channel",
            "control_id",
            "message_type",
            "sending_application",
            "sending_facility",
            "peer",
            "state",
            "ack_code",
            "application_ack",
            "duplicates",
        ):
            print(f"{name:20} {printable(str(getattr(message, name)))}")
        print(f"{'received_at':20} {when(message.received_at)}")
        if message.raw is not None:
            print()
            print(hl7_lines(message.raw))
        return 0
    finally:
        db.close()
