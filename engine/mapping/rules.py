"""Compiled mapping rules: what the loader builds once and every message runs through.

Paths, ``where`` conditions, templates and transforms are all parsed at load time, so
mapping a message is just reading values and calling the prepared steps. The same code
serves :meth:`Mapping.apply` (stop at the first failure) and ``explain`` (record a
:class:`FieldTrace` per field and carry on), through a :class:`Recorder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from engine.mapping.failure import MappingFailure
from engine.mapping.scope import Scope
from engine.mapping.transforms import REQUIRED_FIELD_MISSING, Step, TransformError
from engine.message.path import Path
from engine.message.reader import Segment


@dataclass(frozen=True)
class FieldTrace:
    """One output value explained: where it came from, what was read and what was produced."""

    key: str
    source: str  # the HL7 path (as located in this message), template, const or context name
    raw: str
    value: str
    problem: str | None = None


@dataclass(frozen=True)
class Reading:
    """What a source read: the raw value(s) and the HL7 location (None for const/context)."""

    raw: str | list[str] | Any
    location: Path | None
    described: str | None = None  # how to show the source; None: the location itself

    @property
    def source(self) -> str:
        """The source as ``explain`` and failure texts show it (built only when needed)."""
        return self.described if self.described is not None else str(self.location)


@dataclass(frozen=True)
class Condition:
    """One ``where`` entry: the value at ``path`` must be one of ``accepted``."""

    path: Path
    accepted: frozenset[str]

    def holds_in(self, scope: Scope) -> bool:
        """Test in a scope whose current segment is the candidate."""
        segments = scope.segments_for(self.path)
        return bool(segments) and self.holds_at(segments[0], self.path.repetition or 1)

    def holds_at(self, segment: Segment, repetition: int) -> bool:
        p = self.path
        return segment.value(p.field, repetition, p.component, p.subcomponent) in self.accepted


@dataclass(frozen=True)
class PathSource:
    """Values at an HL7 path, optionally chosen by ``where`` and collected with ``all``."""

    path: Path
    segment_conditions: tuple[Condition, ...] = ()
    repetition_conditions: tuple[Condition, ...] = ()
    collect_all: bool = False

    @cached_property
    def plain(self) -> bool:
        """No ``all``, no ``where``: the value is the first segment's at the path."""
        return not (self.collect_all or self.segment_conditions or self.repetition_conditions)

    def read(self, scope: Scope) -> Reading:
        hits = self.hits(scope)
        if self.collect_all:
            values = [value for _, value in hits if value]
            location = hits[0][0] if hits else self.path
            return Reading(values, location, str(self.path))
        if not hits:
            return Reading("", self.path)
        location, value = hits[0]
        return Reading(value, location)

    def text(self, scope: Scope) -> str | list[str]:
        """What :meth:`read` reads, without its location: a template only joins the text, and
        a plain path (no ``all``, no ``where``) is then one lookup (this runs before every ACK)."""
        if not self.plain:
            return self.read(scope).raw
        p = self.path
        for segment in scope.first_segment_for(p):
            return segment.value(p.field, p.repetition or 1, p.component, p.subcomponent)
        return ""

    def hits(self, scope: Scope) -> list[tuple[Path, str]]:
        """(located path, decoded value) for each matching segment and repetition, in order."""
        p = self.path
        found: list[tuple[Path, str]] = []
        for segment in scope.first_segment_for(p) if self.plain else scope.segments_for(p):
            if self.segment_conditions and not self._segment_matches(scope, segment):
                continue
            for repetition in self._repetitions(segment):
                if self.repetition_conditions and not self._repetition_matches(segment, repetition):
                    continue
                value = segment.value(p.field, repetition, p.component, p.subcomponent)
                found.append((p.at(segment.occurrence, repetition), value))
                if not self.collect_all:
                    return found
        return found

    def _repetitions(self, segment: Segment) -> range:
        """The repetitions to try: the one the path names, else every one of the field.

        Without ``all`` or a repetition ``where``, the first repetition is always the hit, so
        the field is not split just to count them (this runs for every path of every message).
        """
        p = self.path
        if p.repetition:
            return range(p.repetition, p.repetition + 1)
        if not self.collect_all and not self.repetition_conditions:
            return range(1, 2)
        return range(1, max(1, len(segment.repetitions(p.field))) + 1)

    def _segment_matches(self, scope: Scope, segment: Segment) -> bool:
        candidate = scope.within(segment)
        return all(c.holds_in(candidate) for c in self.segment_conditions)

    def _repetition_matches(self, segment: Segment, repetition: int) -> bool:
        return all(c.holds_at(segment, repetition) for c in self.repetition_conditions)


@dataclass(frozen=True)
class FirstOf:
    """``path = ["TQ1-9.1", "ORC-7.6", "OBR-5"]``: the first path that has a value."""

    sources: tuple[PathSource, ...]

    def read(self, scope: Scope) -> Reading:
        first = None
        for source in self.sources:  # stop at the first value: this runs before every ACK
            reading = source.read(scope)
            if not _is_empty(reading.raw):
                return reading
            first = first or reading
        return first


@dataclass(frozen=True)
class ConstSource:
    value: str | int | float | bool

    def read(self, scope: Scope) -> Reading:
        return Reading(self.value, None, "const")


@dataclass(frozen=True)
class ContextSource:
    name: str

    def read(self, scope: Scope) -> Reading:
        return Reading(self.text(scope), None, f"context.{self.name}")

    def text(self, scope: Scope) -> str:
        return scope.context.get(self.name, "")


@dataclass(frozen=True)
class TemplateSource:
    """Literal text and placeholders (paths or context names), split once at load time."""

    text: str
    parts: tuple[str | PathSource | ContextSource, ...]

    def read(self, scope: Scope) -> Reading:
        out = [part if isinstance(part, str) else part.text(scope) for part in self.parts]
        return Reading("".join(out), None, self.text)


Source = PathSource | FirstOf | ConstSource | ContextSource | TemplateSource


class Recorder:
    """Raises the first failure (``apply``) or records a trace of every field (``explain``)."""

    def __init__(self, *, explaining: bool) -> None:
        self.traces: list[FieldTrace] | None = [] if explaining else None

    def done(self, key: str, reading: Reading, value: Any) -> None:
        if self.traces is not None:
            self.traces.append(FieldTrace(key, reading.source, _text(reading.raw), _text(value)))

    def failed(self, failure: MappingFailure, reading: Reading) -> None:
        if self.traces is None:
            raise failure
        trace = FieldTrace(failure.key, reading.source, _text(reading.raw), "", failure.text)
        self.traces.append(trace)


@dataclass(frozen=True)
class FieldRule:
    """One output key: a source, then default, required and transforms."""

    key: str
    source: Source
    default: str | None = None
    required: bool = False
    steps: tuple[Step, ...] = ()

    def evaluate(self, scope: Scope, out: dict[str, Any], recorder: Recorder, prefix: str) -> None:
        key = prefix + self.key
        reading = self.source.read(scope)
        try:
            value = self._finish(reading, key)
        except MappingFailure as failure:
            recorder.failed(failure, reading)
            return
        recorder.done(key, reading, value)
        if value is not None:
            out[self.key] = value

    def _finish(self, reading: Reading, key: str) -> Any:
        value = reading.raw
        if _is_empty(value) and self.default is not None:
            value = self.default
        if _is_empty(value):
            if self.required:
                where = f" at {reading.source}" if reading.location else ""
                raise MappingFailure(
                    REQUIRED_FIELD_MISSING, reading.location, f"{key}: required value is empty{where}", key
                )
            return None
        for step in self.steps:
            try:
                value = _run(step, value)
            except TransformError as exc:
                raise MappingFailure(exc.code, reading.location, f"{key}: {exc.reason}", key) from None
        return value


@dataclass(frozen=True)
class EachRule:
    """A list output: one item per ``segment`` that meets ``conditions``."""

    key: str
    segment: str
    conditions: tuple[Condition, ...]
    minimum: int
    fields: tuple[FieldRule, ...]

    def evaluate(self, scope: Scope, out: dict[str, Any], recorder: Recorder, prefix: str) -> None:
        matching = [
            segment
            for segment in scope.message.all(self.segment)
            if all(c.holds_in(scope.within(segment)) for c in self.conditions)
        ]
        if len(matching) < self.minimum:
            location = self.conditions[0].path if self.conditions else None
            text = f"{self.key}: needs at least {self.minimum} matching {self.segment} segment(s)"
            failure = MappingFailure(REQUIRED_FIELD_MISSING, location, text, self.key)
            recorder.failed(failure, Reading("", location, self.segment))
            return
        items = []
        for index, segment in enumerate(matching):
            item: dict[str, Any] = {}
            for rule in self.fields:
                rule.evaluate(scope.within(segment), item, recorder, f"{self.key}[{index}].")
            items.append(item)
        if items:
            out[self.key] = items


def _run(step: Step, value: Any) -> Any:
    if isinstance(value, list) and not step.combines_list:
        return [step.apply(item) for item in value]
    if not isinstance(value, list) and step.combines_list:
        return value
    return step.apply(value)


def _is_empty(value: Any) -> bool:
    return value == "" or value == []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


Rule = FieldRule | EachRule
