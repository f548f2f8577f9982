"""HL7 path notation (``PID-3[2].1``, ``OBX[2]-5.5``) shared by mappings, channel filters and ERR-2.

Grammar, all numbers 1-based::

    SEG ["[" occurrence "]"] "-" field ["[" repetition "]"] ["." component ["." subcomponent]]

SEG is three characters: an upper-case letter then upper-case letters or digits (``PID``,
``PV1``, ``ZDS``). A missing occurrence or repetition means "the first".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NoReturn

from engine.errors import PathError
from engine.message.delimiters import DEFAULT_DELIMITERS, Delimiters

SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
"""A segment name: an upper-case letter, then two upper-case letters or digits."""
_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Path:
    """One position in a message, down to a sub-component."""

    segment: str
    occurrence: int | None
    field: int
    repetition: int | None
    component: int | None
    subcomponent: int | None

    @classmethod
    def parse(cls, text: str) -> Path:
        """Read a path; raise :class:`PathError` saying what is wrong with it."""
        return _parse_cached(text)

    def __str__(self) -> str:
        text = self.segment
        if self.occurrence is not None:
            text += f"[{self.occurrence}]"
        text += f"-{self.field}"
        if self.repetition is not None:
            text += f"[{self.repetition}]"
        if self.component is not None:
            text += f".{self.component}"
        if self.subcomponent is not None:
            text += f".{self.subcomponent}"
        return text

    def erl(self, delimiters: Delimiters = DEFAULT_DELIMITERS) -> str:
        """The ERR-2 Error Location: ``SEG^seq^field^rep^comp^sub``, trailing parts omitted."""
        parts = [self.segment, str(self.occurrence or 1), str(self.field)]
        if self.repetition is not None or self.component is not None:
            parts.append(str(self.repetition or 1))
        if self.component is not None:
            parts.append(str(self.component))
            if self.subcomponent is not None:
                parts.append(str(self.subcomponent))
        return delimiters.component.join(parts)

    def at(self, occurrence: int, repetition: int | None) -> Path:
        """This path pinned to one segment occurrence and field repetition (where a value was read)."""
        return _pinned(self, occurrence, repetition)


@lru_cache(maxsize=4096)
def _pinned(path: Path, occurrence: int, repetition: int | None) -> Path:
    """Mappings pin the same few paths in every message, so keep them rather than rebuild them."""
    return Path(path.segment, occurrence, path.field, repetition, path.component, path.subcomponent)


@lru_cache(maxsize=1024)
def _parse_cached(text: str) -> Path:
    """Mappings and filters ask for the same few paths for every message, so cache the parse."""
    return _PathReader(text).read()


class _PathReader:
    """A tiny left-to-right reader so each error can say where the path went wrong."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def read(self) -> Path:
        if not self.text.strip():
            raise PathError("empty HL7 path; expected something like 'PID-3.1'")
        segment = self.text[:3]
        if not SEGMENT_NAME.fullmatch(segment):
            self.fail("must start with a 3-character upper-case segment name such as PID or ZDS")
        self.pos = 3
        occurrence = self.bracketed("segment occurrence")
        if not self.text.startswith("-", self.pos):
            hint = " (HL7 paths use '-' before the field: PID-3, not PID.3)"
            if not self.peek("."):
                hint = ""
            self.fail(f"expected '-' and a field number after the segment{hint}")
        self.pos += 1
        field = self.number("field")
        repetition = self.bracketed("field repetition")
        component = self.dotted("component")
        subcomponent = self.dotted("sub-component") if component is not None else None
        if self.pos != len(self.text):
            self.fail("unexpected text after the path")
        return Path(segment, occurrence, field, repetition, component, subcomponent)

    def peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)

    def number(self, what: str) -> int:
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            self.fail(f"expected a {what} number")
        value = int(match.group())
        if value < 1:
            self.fail(f"{what} numbers start at 1")
        self.pos = match.end()
        return value

    def bracketed(self, what: str) -> int | None:
        if not self.peek("["):
            return None
        self.pos += 1
        value = self.number(what)
        if not self.peek("]"):
            self.fail(f"expected ']' after the {what}")
        self.pos += 1
        return value

    def dotted(self, what: str) -> int | None:
        if not self.peek("."):
            return None
        self.pos += 1
        return self.number(what)

    def fail(self, reason: str) -> NoReturn:
        raise PathError(f"invalid HL7 path {self.text!r} at character {self.pos + 1}: {reason}")
