"""Why a message could not be mapped: the HL7 error the receiver puts in its AR/CR ACK."""

from __future__ import annotations

from dataclasses import dataclass

from engine.message.path import Path


@dataclass(eq=False)
class MappingFailure(Exception):
    """A required field is missing or a value is invalid, so the message is refused.

    ``code`` is from HL7 table 0357 (101 required field missing, 102 data type error,
    103 table value not found) for ERR-3, ``location`` the HL7 position for ERR-2, ``text``
    a readable reason that names the field but never its content (it may be PHI), and ``key``
    the payload key being built (``attachments[0].content``).

    Not ``frozen``: Python assigns ``__traceback__`` on exceptions as they propagate through
    context managers, which a frozen dataclass refuses (FrozenInstanceError).
    """

    code: int
    location: Path | None
    text: str
    key: str

    def __str__(self) -> str:
        return self.text
