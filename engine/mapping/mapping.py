"""A loaded mapping: which messages it takes, which destination it feeds, and its rules."""

from __future__ import annotations

import collections.abc as abc
import pathlib
from dataclasses import dataclass
from typing import Any

from engine.mapping.rules import EachRule, FieldTrace, Recorder, Rule
from engine.mapping.scope import Scope
from engine.message.reader import Message


@dataclass(frozen=True)
class OutputKey:
    """One declared payload key; ``fields`` lists the item keys of an ``each`` list."""

    name: str
    required: bool
    fields: tuple[OutputKey, ...] = ()


@dataclass(frozen=True)
class Mapping:
    """Message → destination payload, compiled once by :func:`engine.mapping.load_mapping`.

    ``apply`` is pure and fast enough to run before every ACK; the receiver dry-runs it and the
    delivery queue runs it again from the stored message.
    """

    path: pathlib.Path
    input: tuple[str, ...]
    output: str
    rules: tuple[Rule, ...]

    def accepts(self, message: Message) -> bool:
        """Whether the message's MSH-9 is one of ``input`` (``"MDM"`` accepts every MDM event)."""
        kind = message.message_type
        return kind in self.input or f"{kind}^{message.trigger_event}" in self.input

    def apply(self, message: Message, *, context: abc.Mapping[str, str] | None = None) -> dict[str, Any]:
        """The payload: output key → value. Raises :class:`MappingFailure` on bad data."""
        return self._run(message, context, Recorder(explaining=False))

    def explain(self, message: Message, *, context: abc.Mapping[str, str] | None = None) -> list[FieldTrace]:
        """Every output value with its HL7 source, raw and final value; failures included."""
        recorder = Recorder(explaining=True)
        self._run(message, context, recorder)
        return recorder.traces

    def output_keys(self) -> tuple[OutputKey, ...]:
        """The declared payload structure, for ``courier check`` against a destination's spec."""
        return tuple(_output_key(rule) for rule in self.rules)

    def _run(
        self, message: Message, context: abc.Mapping[str, str] | None, recorder: Recorder
    ) -> dict[str, Any]:
        scope = Scope(message, context or {})
        payload: dict[str, Any] = {}
        for rule in self.rules:
            rule.evaluate(scope, payload, recorder, "")
        return payload


def _output_key(rule: Rule) -> OutputKey:
    if isinstance(rule, EachRule):
        return OutputKey(rule.key, rule.minimum > 0, tuple(_output_key(r) for r in rule.fields))
    return OutputKey(rule.key, rule.required)
