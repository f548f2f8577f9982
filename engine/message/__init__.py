"""The HL7 message layer: frame bytes → :class:`Message` (lazy, hot-path safe) and ACKs back.

``reader`` reads, ``escapes`` undoes/applies escape sequences, ``path`` parses ``PID-3[2].1``
style paths, ``batch`` splits FHS/BHS batches, ``ack`` builds acknowledgements.
"""

from engine.message.ack import (
    ACCEPT,
    ERROR,
    REJECT,
    AckError,
    ack_wanted,
    build_ack,
    build_batch_ack,
    build_unreadable_nak,
    commit_ack_wanted,
    is_enhanced_mode,
)
from engine.message.batch import Batch, split_batch, split_file
from engine.message.delimiters import Delimiters
from engine.message.escapes import escape, unescape
from engine.message.path import Path
from engine.message.reader import Message, Segment

__all__ = [
    "ACCEPT",
    "ERROR",
    "REJECT",
    "AckError",
    "Batch",
    "Delimiters",
    "Message",
    "Path",
    "Segment",
    "build_ack",
    "build_batch_ack",
    "build_unreadable_nak",
    "ack_wanted",
    "commit_ack_wanted",
    "escape",
    "is_enhanced_mode",
    "split_batch",
    "split_file",
    "unescape",
]
