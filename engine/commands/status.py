"""``courier status CONTROL_ID``: everything that happened to one message, across destinations.

One table of its deliveries (destination, state, attempts, vendor id) and its timeline
(received, queued, sent, delivered, read, failed...). Event details and delivery errors can
quote the vendor, so they are shown only with ``--details``; bodies are never shown here
(``courier messages show --body`` does that).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.commands.store_options import add_store_arguments, open_database, when
from engine.message.display import printable

if TYPE_CHECKING:
    from engine.store import Delivery, Event, Message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("control_id", metavar="MESSAGE_CONTROL_ID", help="MSH-10 of the message")
    parser.add_argument(
        "--details",
        action="store_true",
        help="also print event details and delivery errors (may quote the vendor)",
    )
    add_store_arguments(parser)


def run(args: argparse.Namespace) -> int:
    db = open_database(args)
    try:
        message = db.get_message(args.control_id)
        if message is None:
            print(f"courier status: no message with control id '{printable(args.control_id)}'")
            return 1
        events = db.timeline(args.control_id)
        delivery_ids = sorted({e.delivery_id for e in events if e.delivery_id is not None})
        deliveries = [d for d in map(db.get_delivery, delivery_ids) if d is not None]
        for line in render(message, deliveries, events, details=args.details):
            print(line)
        return 0
    finally:
        db.close()


def render(
    message: Message, deliveries: Sequence[Delivery], events: Sequence[Event], *, details: bool = False
) -> list[str]:
    """The report as lines; ``message`` is the newest stored message with the control id."""
    lines = [
        f"{printable(message.control_id)}  {printable(message.message_type)}  channel {message.channel}  "
        f"from {printable(message.sending_application)}/{printable(message.sending_facility)}",
        f"received {when(message.received_at)}  state {message.state}  ACK {message.ack_code}"
        + (f"  duplicates {message.duplicates}" if message.duplicates else ""),
        "",
        f"{'delivery':>8}  {'destination':24}  {'state':10}  {'attempts':>8}  {'updated':25}  vendor id",
    ]
    for d in deliveries:
        lines.append(
            f"{d.id:>8}  {d.destination:24}  {d.state:10}  {d.attempts:>8}  "
            f"{when(d.updated_at):25}  {printable(d.remote_id or '-')}"
        )
        if details and d.last_error:
            lines.append(f"{'':>8}  last error: {d.last_error}")
    names = {d.id: d.destination for d in deliveries}
    lines += ["", f"{'when':25}  {'destination':24}  {'event':16}  state"]
    for e in events:
        where = names.get(e.delivery_id, "-") if e.delivery_id is not None else "(message)"
        line = f"{when(e.at):25}  {where:24}  {e.kind:16}  {e.state}"
        lines.append(line + (f"  {e.detail}" if details and e.detail else ""))
    return lines
