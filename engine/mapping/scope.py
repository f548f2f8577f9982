"""Which segments a path reads, knowing the ORU/MDM group structure.

Outside ``each`` a path reads the segments of the whole message. Inside ``each`` the scope has
a *current* segment: a path to that segment name reads the current one, and a path to another
name reads the nearest such segment before it — the OBR an ORU OBX belongs to, the TXA before
an MDM OBX, the PID of the patient in a multi-patient ORU — falling back to the first in the
message. Explicit occurrences (``OBX[2]-5``) always address the whole message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.message.path import Path
from engine.message.reader import Message, Segment


@dataclass(frozen=True)
class Scope:
    """The message being mapped, the ``each`` segment if any, and the engine's context values."""

    message: Message
    context: Mapping[str, str]
    current: Segment | None = None

    def within(self, segment: Segment) -> Scope:
        """The scope of one ``each`` item (or of a segment a ``where`` is testing)."""
        return Scope(self.message, self.context, segment)  # not dataclasses.replace: hot path

    def segments_for(self, path: Path) -> list[Segment]:
        """The segments ``path`` may read from here, in message order."""
        if path.occurrence is not None:
            found = self.message.segment(path.segment, path.occurrence)
            return [found] if found is not None else []
        if self.current is None:
            return self.message.all(path.segment)
        if self.current.name == path.segment:
            return [self.current]
        owner = self._nearest_before(path.segment)
        return [owner] if owner is not None else []

    def first_segment_for(self, path: Path) -> list[Segment]:
        """The first of :meth:`segments_for` (or none), without making the others: a plain
        path reads one value, and this runs for every path of every message before its ACK."""
        if path.occurrence is None and self.current is None:
            found = self.message.segment(path.segment)
            return [found] if found is not None else []
        return self.segments_for(path)

    def _nearest_before(self, name: str) -> Segment | None:
        segments = self.message.segments
        for index in range(self.current.index - 1, -1, -1):
            if segments[index].name == name:
                return segments[index]
        return self.message.segment(name)
