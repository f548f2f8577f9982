"""The five (or six) characters that structure an HL7 v2 message, read from MSH-1 and MSH-2.

Kept apart from the reader so that the escape, path and ACK modules can use it without
importing the reader (and without an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delimiters:
    """Separators declared by one message; every reader and writer of that message honours them."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str | None = "\\"  # None: MSH-2 declared three characters (``^~&``), no escaping
    subcomponent: str = "&"
    truncation: str | None = None  # 5th encoding character, HL7 v2.7+

    @property
    def encoding_characters(self) -> str:
        """The MSH-2 text, e.g. ``^~\\&`` (or ``^~\\&#`` with a truncation character)."""
        escape, truncation = self.escape or "", self.truncation or ""
        return self.component + self.repetition + escape + self.subcomponent + truncation


DEFAULT_DELIMITERS = Delimiters()
"""``|^~\\&``: what HL7 recommends, and what we write when there is no message to copy from."""
