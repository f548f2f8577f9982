"""Delivery statuses as HL7 application ACKs that any receiving engine reads without custom code.

One status message per reported transition of one delivery::

    MSH|^~\\&|<MSH-5>|<MSH-6>|<MSH-3>|<MSH-4>|<now>||ACK^<trigger>^ACK|<new id>|P|2.5.1|||AL|NE
    MSA|AA|<original MSH-10>
    ERR||...|207^<text>^HL70357|E||||<text>          (AE / AR only)
    ZDS|delivered|20240131142501+0000|care-team-qliq|qliq|<vendor id>|<recipient>|DELIVERED|<channel>

- MSA-1: AA for accepted / delivered / read; AE for failed, expired and dead-lettered (the
  delivery did not happen: transient or delivery failure); AR when the vendor rejected the
  message itself (resending it unchanged will not help). MSA-2 is the original MSH-10.
- ERR (AE/AR): table 0357 code 207 (the table has no "delivery failed" code; 207 is its
  catch-all), severity E, and ERR-8 saying what happened in words, naming the vendor's
  ``invalidParameters`` (names and reasons, never values).
- MSH-15 = AL, MSH-16 = NE: the status message asks for a commit ACK (CA) and no application
  ACK. An original-mode receiver never acknowledges an ACK, so without MSH-15 we could not
  tell whether the hospital got the status; with it, an engine that follows enhanced mode
  answers CA with MSA-2 = our MSH-10, and one that does not usually answers AA. Both count.

``ZDS`` (Courier delivery status), every field ST unless said:

====== =============================================================================
ZDS-1  event: accepted, delivered, read, failed, expired, rejected or dead_letter
ZDS-2  when it happened (DTM with UTC offset)
ZDS-3  destination name (from the channel file)
ZDS-4  vendor: the destination type (`type` in the channel file)
ZDS-5  the vendor's message id
ZDS-6  recipient the status is about (empty when the vendor reports per message)
ZDS-7  Courier delivery state: SENT, DELIVERED, READ or ERROR
ZDS-8  channel name
====== =============================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from engine.delivery.transitions import Transition
from engine.message import ACCEPT, ERROR, REJECT, AckError, Message, build_ack, escape

# Which channel ``status_reports.events`` entry asks for each transition event.
REPORTED_AS = {
    "accepted": "accepted",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "expired": "failed",
    "rejected": "failed",
    "dead_letter": "failed",
}
_OUTCOME = {"accepted": ACCEPT, "delivered": ACCEPT, "read": ACCEPT, "rejected": REJECT}
_WORDS = {
    "failed": "Delivery failed",
    "expired": "Delivery expired before the recipient got the message",
    "rejected": "The vendor rejected the message",
    "dead_letter": "Delivery given up after all retries",
}
STATUS_SEGMENT = "ZDS"


def outcome(event: str) -> str:
    """A (AA), E (AE) or R (AR) for a transition event."""
    if event not in REPORTED_AS:
        raise ValueError(f"unknown transition event {event!r}")
    return _OUTCOME.get(event, ERROR)


def is_wanted(original: Message, event: str, channel_events: Sequence[str]) -> bool:
    """Whether the sender gets a status message for this event.

    Enhanced mode (MSH-15 or MSH-16 valued): MSH-16 decides: AL always, NE never, ER only on
    errors, SU only on success; an empty or unknown MSH-16 falls back to the channel's list.
    Original mode: the channel's ``status_reports.events``.
    """
    condition = original.application_ack_type.strip().upper()
    if condition == "AL":
        return True
    if condition == "NE":
        return False
    if condition == "ER":
        return outcome(event) != ACCEPT
    if condition == "SU":
        return outcome(event) == ACCEPT
    return REPORTED_AS[event] in channel_events


def build_status_message(
    original: Message, transition: Transition, *, vendor: str, control_id: str, now: datetime
) -> bytes:
    """The status ACK for one transition, in the original message's delimiters and version."""
    result = outcome(transition.event)
    errors = () if result == ACCEPT else (AckError(207, describe_failure(transition)),)
    ack = build_ack(original, result, control_id=control_id, timestamp=now, errors=errors, enhanced=False)
    header, rest = ack.decode(original.charset).split("\r", 1)
    text = _ask_for_commit_ack(header, original) + "\r" + rest + _zds(original, transition, vendor) + "\r"
    return text.encode(original.charset, errors="replace")


def describe_failure(transition: Transition) -> str:
    """ERR-8: what went wrong, in words an interface analyst can act on (no PHI)."""
    words = _WORDS.get(transition.event, "Delivery failed")
    text = f"{words} (destination {transition.destination})"
    if transition.detail:
        text += f": {transition.detail}"
    named = [f"{p.name} ({p.reason})" if p.reason else p.name for p in transition.invalid_parameters]
    if named:
        text += "; the vendor named invalid parameters: " + ", ".join(named)
    return text


def hl7_time(at: float) -> str:
    """HL7 DTM with its UTC offset, e.g. ``20240131142501+0000``."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M%S%z")


def _ask_for_commit_ack(header: str, original: Message) -> str:
    """The ACK's MSH with MSH-15 = AL and MSH-16 = NE (list index n-1 holds MSH-n)."""
    fields = header.split(original.delimiters.field)
    fields.extend([""] * (16 - len(fields)))
    fields[14], fields[15] = "AL", "NE"
    return original.delimiters.field.join(fields)


def _zds(original: Message, transition: Transition, vendor: str) -> str:
    d = original.delimiters
    values = (
        transition.event,
        hl7_time(transition.at),
        transition.destination,
        vendor,
        transition.remote_id or "",
        transition.recipient or "",
        transition.state,
        transition.channel,
    )
    return d.field.join([STATUS_SEGMENT, *(escape(value, d) for value in values)])
