"""``courier deliveries list|show|requeue|cancel``: the delivery queue, without PHI.

Requeue and cancel work on a running engine's store too (SQLite allows a second writer);
the engine picks requeued deliveries up on its next pass. Each is recorded among the operators'
actions, as the console's are, with the operator named ``cli:`` and the login name.
"""

from __future__ import annotations

import argparse

from engine.commands.store_options import (
    add_store_arguments,
    cli_operator,
    open_database,
    print_held,
    when,
)
from engine.message.display import printable


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel")
    parser.add_argument("--destination")
    parser.add_argument("--state", help="QUEUED, SENDING, SENT, DELIVERED, READ, ERROR or CANCELLED")
    add_store_arguments(parser)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest deliveries first")
    listing.add_argument("--limit", type=int, default=50)
    _filters(listing)
    show = actions.add_parser("show", help="one delivery, with its last error")
    show.add_argument("id", type=int)
    add_store_arguments(show)
    for name, summary in (("requeue", "queue again from attempt 0"), ("cancel", "stop delivering")):
        action = actions.add_parser(
            name, help=f"{summary}: the given ids, or every delivery matching the filters"
        )
        action.add_argument("ids", type=int, nargs="*")
        _filters(action)


def run(args: argparse.Namespace) -> int:
    from engine.store import DeliverySelection

    db = open_database(args, readonly=args.action in ("list", "show"))
    try:
        if args.action == "list":
            rows = db.list_deliveries(args.channel, args.destination, args.state, args.limit)
            print_held(held for held in db.held_destinations() if args.destination in (None, held[0]))
            print(
                f"{'id':>6}  {'channel':20}  {'destination':16}  {'state':10}  {'tries':>5}  "
                f"{'next attempt':25}  control id"
            )
            for d in rows:
                waiting = f"  (waits for {d.waits_for})" if d.waits_for is not None else ""
                print(
                    f"{d.id:>6}  {d.channel:20}  {d.destination:16}  {d.state:10}  {d.attempts:>5}  "
                    f"{when(d.next_attempt_at) if d.state == 'QUEUED' else '-':25}  {printable(d.control_id)}"
                    + waiting
                )
            return 0
        if args.action == "show":
            delivery = db.get_delivery(args.id)
            if delivery is None:
                print(f"courier deliveries: no delivery {args.id}")
                return 1
            for name in ("id", "channel", "destination", "control_id", "state", "attempts", "remote_id"):
                print(f"{name:16} {printable(str(getattr(delivery, name)))}")
            for name in ("created_at", "updated_at", "next_attempt_at"):
                print(f"{name:16} {when(getattr(delivery, name))}")
            print(f"{'last_error':16} {delivery.last_error or '-'}")
            print(f"{'progress':16} {delivery.progress or '-'}")  # a send of several requests, part way
            print(f"{'waits_for':16} {delivery.waits_for or '-'}")  # an earlier one with its order_by key
            return 0
        selection = DeliverySelection(
            ids=tuple(args.ids) or None, channel=args.channel, destination=args.destination, state=args.state
        )
        if selection == DeliverySelection():
            print(f"courier deliveries {args.action}: give ids or at least one filter")
            return 2
        with db.transaction():
            if args.action == "requeue":
                print(f"requeued {db.requeue(selection, by=cli_operator())} deliveries")
            else:
                print(f"cancelled {db.cancel(selection, by=cli_operator())} deliveries")
        return 0
    finally:
        db.close()
