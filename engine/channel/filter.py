"""The source filter's verdict on one message: accepted, filtered (AA, not delivered) or
rejected (AR with an HL7 table 0357 code and location).

What a miss does:

========================================  =======================  =====================
the message's                              verdict                  ERR-3 (table 0357)
========================================  =======================  =====================
MSH-9.1 type not in ``message_types``      rejected                 200 unsupported message type
MSH-9.2 event not accepted for that type   rejected                 201 unsupported event code
MSH-11.1 not in ``processing_ids``         rejected                 202 unsupported processing id
MSH-12.1 not in ``versions``               rejected                 203 unsupported version id
MSH-3.1 / MSH-4.1 not listed               rejected                 207 application error
a ``conditions`` entry does not hold       filtered, or rejected    207 (``on_condition_miss``)
========================================  =======================  =====================

Texts name the rule, never field contents beyond MSH routing values (no PHI). This runs for
every message, so it only reads MSH shortcuts and pre-parsed condition paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from engine.channel.conditions import Readable
from engine.channel.config import ChannelFilter
from engine.message.ack import AckError
from engine.message.path import Path

UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION_ID = 203
APPLICATION_ERROR = 207


class Filterable(Readable, Protocol):
    """What the filter reads from an :class:`engine.message.Message`."""

    message_type: str
    trigger_event: str
    processing_id: str
    version: str
    sending_application: str
    sending_facility: str


@dataclass(frozen=True)
class Verdict:
    """``code`` (table 0357), ``location`` (HL7 path text, e.g. ``MSH-9.1``) and ``text`` fill
    the ERR segment when not accepted."""

    outcome: Literal["accepted", "filtered", "rejected"]
    code: int | None = None
    location: str | None = None
    text: str = ""

    def ack_error(self) -> AckError | None:
        """The ERR content for the ACK, or None when accepted."""
        if self.code is None:
            return None
        return AckError(self.code, self.text, Path.parse(self.location) if self.location else None)


ACCEPTED = Verdict("accepted")


def _reject(code: int, location: str, text: str) -> Verdict:
    return Verdict("rejected", code, location, text)


def evaluate(channel_filter: ChannelFilter, message: Filterable) -> Verdict:
    """Decide what the channel does with ``message``; the first rule that fails decides."""
    message_type = message.message_type
    if message_type not in channel_filter.events_by_type:
        return _reject(
            UNSUPPORTED_MESSAGE_TYPE,
            "MSH-9.1",
            f"message type {message_type!r} is not accepted by this channel",
        )
    events = channel_filter.events_by_type[message_type]
    if events is not None and message.trigger_event not in events:
        return _reject(
            UNSUPPORTED_EVENT_CODE, "MSH-9.2", f"event {message_type}^{message.trigger_event} is not accepted"
        )
    if message.processing_id not in channel_filter.processing_ids:
        return _reject(
            UNSUPPORTED_PROCESSING_ID, "MSH-11.1", f"processing id {message.processing_id!r} is not accepted"
        )
    if message.version not in channel_filter.versions:
        return _reject(UNSUPPORTED_VERSION_ID, "MSH-12.1", f"HL7 version {message.version!r} is not accepted")
    apps, facilities = channel_filter.sending_applications, channel_filter.sending_facilities
    if apps and message.sending_application not in apps:
        return _reject(
            APPLICATION_ERROR,
            "MSH-3.1",
            f"sending application {message.sending_application!r} is not accepted",
        )
    if facilities and message.sending_facility not in facilities:
        return _reject(
            APPLICATION_ERROR, "MSH-4.1", f"sending facility {message.sending_facility!r} is not accepted"
        )
    for condition in channel_filter.conditions:
        if not condition.holds(message):
            outcome = "filtered" if channel_filter.on_condition_miss == "filter" else "rejected"
            return Verdict(
                outcome, APPLICATION_ERROR, str(condition.path), f"condition {condition.text!r} does not hold"
            )
    return ACCEPTED
