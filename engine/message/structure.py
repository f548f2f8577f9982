"""What makes a frame unreadable as *one* HL7 message, checked before any check of a channel.

Each is an AR with ERR-3 and ERR-2 saying where: nothing can be correlated or de-duplicated
without an MSH-10, a line whose name is not a segment name would be read as another segment
(``PIDX|`` as PID), and a second MSH without a batch header would be stored as part of the first
message and never answered on its own.
"""

from __future__ import annotations

from engine.message.ack import AckError, SegmentLocation
from engine.message.path import Path
from engine.message.reader import Message

CONTROL_ID = Path.parse("MSH-10")


def structure_problem(message: Message) -> AckError | None:
    """The first reason ``message`` cannot be taken as one HL7 message, or None."""
    if not message.control_id.strip():
        return AckError(101, "MSH-10 (message control id) is empty", CONTROL_ID)
    position = message.unreadable_segment
    if position is not None:
        return AckError(
            100,
            f"segment {position} (counting MSH as 1) has no readable name: a segment name is three "
            "upper-case letters or digits followed by the field separator",
            SegmentLocation("", position),
        )
    position = message.second_header
    if position is not None:
        return AckError(
            100,
            f"a second MSH at segment {position} without a batch header: send one message per "
            "frame, or wrap them in BHS/BTS",
            SegmentLocation("MSH", 2),
        )
    return None
