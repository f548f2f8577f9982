"""A destination's ``order_by``: which deliveries must go one after another.

``order_by`` is a template of HL7 paths such as ``"{PID-3.1}"`` (the patient identifier) or
``"{PID-3.4}/{PID-3.1}"``. Deliveries of one destination whose messages give the same text
go strictly in the order they were received: a later one is not claimed while an earlier one
is QUEUED (waiting for a retry, say) or SENDING, until that one is sent, dead-lettered or
cancelled. Deliveries with different keys go in parallel, up to ``concurrency``.

The key is read when the message is routed, before it is stored; the store keeps only a
keyed hash of it (:meth:`engine.store.database.Database.keyed_hash`), never the patient id.
A message without any of the values gives the template's bare text as its key: such messages
keep their order among themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import PathError
from engine.message import Message
from engine.message.path import Path

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class OrderBy:
    """A compiled ``order_by`` template: literal text between HL7 paths."""

    text: str
    parts: tuple[str | Path, ...]

    @classmethod
    def parse(cls, text: str) -> OrderBy:
        """Raises ValueError naming what is wrong with the template."""
        parts: list[str | Path] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[position : match.start()])
            try:
                parts.append(Path.parse(match.group(1).strip()))
            except PathError as exc:
                raise ValueError(f"{{{match.group(1)}}}: {exc}") from None
            position = match.end()
        parts.append(text[position:])
        if not any(isinstance(part, Path) for part in parts):
            raise ValueError('name at least one HL7 path, such as "{PID-3.1}"')
        if any(brace in _PLACEHOLDER.sub("", text) for brace in "{}"):
            raise ValueError("unbalanced brace")
        return cls(text, tuple(part for part in parts if part != ""))

    def key(self, message: Message) -> str:
        """The message's key (PHI: hash it before it is stored)."""
        return "".join(part if isinstance(part, str) else message.get(part) for part in self.parts)


def order_by_problem(text: str) -> str | None:
    """The spec's check of an ``order_by`` value."""
    try:
        OrderBy.parse(text)
    except ValueError as exc:
        return str(exc)
    return None
