"""Declarations: :class:`Field`, :class:`Spec`, the small constructors, and :class:`Problem`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

# -- declarations -------------------------------------------------------------------------

KINDS = ("str", "int", "float", "bool", "path", "list", "object", "objects", "table")
_MISSING: Any = object()

Check = Callable[[Any], "str | None"]
"""Extra validation of a parsed value: returns a problem text, or None when fine."""


@dataclass(frozen=True)
class Field:
    """One key: its type, constraints and documentation."""

    name: str
    kind: str
    doc: str = ""
    required: bool = False
    default: Any = _MISSING
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    example: Any = _MISSING
    secret: bool = False
    item: str | None = None
    spec: Spec | None = None
    discriminator: str | None = None
    variants: Callable[[], Mapping[str, Spec]] | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    @property
    def has_example(self) -> bool:
        return self.example is not _MISSING

    @property
    def type_name(self) -> str:
        """The type as an interface analyst reads it in the reference tables."""
        if self.kind == "list":
            return f"list of {_PLAIN_TYPE_NAMES.get(self.item, self.item)}"
        if self.kind == "objects":
            return "list of tables"
        if self.kind in ("object", "table"):
            return "table"
        return _PLAIN_TYPE_NAMES.get(self.kind, self.kind)


_PLAIN_TYPE_NAMES = {
    "str": "text",
    "path": "a file path",
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
}


@dataclass(frozen=True)
class Spec:
    """A table of fields; ``build`` (a frozen dataclass) receives the parsed values.

    An ``obj`` field declared with ``default=None`` is an optional section: absent → None.
    List fields run ``check`` on each item.
    """

    name: str
    doc: str
    fields: tuple[Field, ...]
    build: Callable[..., Any] | None = None

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


def _field(kind: str, name: str, doc: str, **kw: Any) -> Field:
    if isinstance(kw.get("choices"), list):
        kw["choices"] = tuple(kw["choices"])
    return Field(name=name, kind=kind, doc=doc, **kw)


def string(name: str, doc: str, **kw: Any) -> Field:
    return _field("str", name, doc, **kw)


def integer(name: str, doc: str, **kw: Any) -> Field:
    return _field("int", name, doc, **kw)


def number(name: str, doc: str, **kw: Any) -> Field:
    return _field("float", name, doc, **kw)


def boolean(name: str, doc: str, **kw: Any) -> Field:
    return _field("bool", name, doc, **kw)


def path(name: str, doc: str, **kw: Any) -> Field:
    """A file path, resolved against the directory of the file that declares it."""
    return _field("path", name, doc, **kw)


def string_list(name: str, doc: str, **kw: Any) -> Field:
    return _field("list", name, doc, item="str", **kw)


def obj(name: str, spec: Spec, doc: str = "", **kw: Any) -> Field:
    return _field("object", name, doc or spec.doc, spec=spec, **kw)


def objects(name: str, spec: Spec, doc: str = "", **kw: Any) -> Field:
    return _field("objects", name, doc or spec.doc, spec=spec, **kw)


def table(
    name: str,
    doc: str,
    *,
    discriminator: str,
    variants: Callable[[], Mapping[str, Spec]],
    **kw: Any,
) -> Field:
    """A table validated by the spec that a sibling key (e.g. a destination's ``type``) picks.

    When no variant matches (or ``variants`` returns nothing) the table is accepted as is.
    """
    return _field("table", name, doc, discriminator=discriminator, variants=variants, **kw)


# -- problems -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a configuration file, printed as ``file:line: key.path: message``."""

    key: str
    message: str
    file: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = [str(self.file)] if self.file else []
        if self.file and self.line:
            where.append(str(self.line))
        prefix = ":".join(where)
        body = f"{self.key}: {self.message}" if self.key else self.message
        return f"{prefix}: {body}" if prefix else body


class SpecError(ConfigError):
    """A file broke its spec; ``problems`` lists everything wrong, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def range_text(f: Field) -> str:
    """``[min, max]`` as shown in errors and the reference tables."""
    low = "-inf" if f.min is None else f"{f.min:g}"
    high = "inf" if f.max is None else f"{f.max:g}"
    return f"[{low}, {high}]"


def join_key(prefix: str, name: str) -> str:
    """``destinations[0]`` + ``retry`` → ``destinations[0].retry``: how problems name keys."""
    return f"{prefix}.{name}" if prefix else name
