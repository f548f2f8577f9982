"""Filter conditions: ``"<HL7 path> <op> [value]"`` strings, parsed once at load time.

Operators::

    OBR-25 = F          the value equals F (final results only)
    OBR-25 != P         the value is not P
    OBR-25 in F,C       the value is one of F, C
    PID-3 exists        the field is not empty

A value may be quoted (``"F"``) to keep spaces. An absent field reads as "".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.errors import PathError
from engine.message.path import Path

OPERATORS = ("=", "!=", "in", "exists")


class Readable(Protocol):
    def get(self, path: Path, default: str = "") -> str: ...


@dataclass(frozen=True)
class Condition:
    """One parsed condition; ``text`` is what the channel file says (for messages)."""

    text: str
    path: Path
    op: str
    values: tuple[str, ...]

    def holds(self, message: Readable) -> bool:
        value = message.get(self.path)
        if self.op == "exists":
            return value != ""
        if self.op == "!=":
            return value != self.values[0]
        return value in self.values


def parse_condition(text: str) -> Condition:
    """Read a condition; raise ``ValueError`` (bad shape) or ``PathError`` (bad path)."""
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[1] not in OPERATORS:
        raise ValueError(f"expected '<HL7 path> <op> <value>' with op one of {', '.join(OPERATORS)}")
    path, op = Path.parse(parts[0]), parts[1]
    rest = parts[2].strip() if len(parts) == 3 else ""
    if op == "exists":
        if rest:
            raise ValueError("'exists' takes no value")
        return Condition(text, path, op, ())
    if not rest:
        raise ValueError(f"'{op}' needs a value")
    items = [v.strip() for v in rest.split(",")] if op == "in" else [rest]
    return Condition(text, path, op, tuple(_unquote(v) for v in items))


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def condition_problem(text: str) -> str | None:
    """Why ``text`` is not a condition, or None; for the channel spec's ``check``."""
    try:
        parse_condition(text)
    except (ValueError, PathError) as exc:
        return f"bad condition: {exc}"
    return None
