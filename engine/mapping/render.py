"""What ``courier map MAPPING MESSAGE.hl7 [--explain]`` prints: the payload JSON or a field table.

A file may hold one message or a batch; every message the mapping accepts is mapped. A message
the mapping refuses is shown as its :class:`MappingFailure` (code, location, key, text), which
is also how golden files record an expected refusal.
"""

from __future__ import annotations

import collections.abc as abc
import json
from pathlib import Path as FilePath
from typing import Any

from engine.mapping.failure import MappingFailure
from engine.mapping.mapping import Mapping
from engine.mapping.rules import FieldTrace
from engine.message import Message, split_file
from engine.message.display import printable

_SHOWN_CHARACTERS = 60


def accepted_messages(mapping: Mapping, data: bytes) -> list[Message]:
    """The messages in ``data`` (one, or a batch) whose MSH-9 the mapping takes as input."""
    messages = [Message.parse(raw) for raw in split_file(data)]
    return [message for message in messages if mapping.accepts(message)]


def outcome(mapping: Mapping, message: Message, context: abc.Mapping[str, str]) -> dict[str, Any]:
    """The payload, or ``{"mapping_failure": {...}}`` when the message would be refused."""
    try:
        return mapping.apply(message, context=context)
    except MappingFailure as failure:
        location = str(failure.location) if failure.location else None
        return {
            "mapping_failure": {
                "code": failure.code,
                "location": location,
                "key": failure.key,
                "text": failure.text,
            }
        }


def map_file_json(
    mapping: Mapping, message_file: str | FilePath, *, context: abc.Mapping[str, str] | None = None
) -> str:
    """JSON text: one outcome for a single message, a list of outcomes for a batch file."""
    data = FilePath(message_file).read_bytes()
    return payload_json(mapping, accepted_messages(mapping, data), context or {})[0]


def payload_json(
    mapping: Mapping, messages: list[Message], context: abc.Mapping[str, str]
) -> tuple[str, bool]:
    """JSON text of each message's outcome (one object for one message, else a list), and
    whether the mapping refuses any of them."""
    outcomes = [outcome(mapping, m, context) for m in messages]
    result: Any = outcomes[0] if len(outcomes) == 1 else outcomes
    refused = any("mapping_failure" in o for o in outcomes)
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n", refused


def explain_file(
    mapping: Mapping, message_file: str | FilePath, *, context: abc.Mapping[str, str] | None = None
) -> str:
    """A readable table per accepted message: key, HL7 source, raw value → final value."""
    data = FilePath(message_file).read_bytes()
    return explain(mapping, accepted_messages(mapping, data), context or {})[0]


def explain(mapping: Mapping, messages: list[Message], context: abc.Mapping[str, str]) -> tuple[str, bool]:
    """The tables of :func:`explain_file`, and whether the mapping refuses any message."""
    blocks = []
    refused = False
    for message in messages:
        traces = mapping.explain(message, context=context)
        refused = refused or any(t.problem for t in traces)
        header = f"# {message.message_type}^{message.trigger_event} {printable(message.control_id)}"
        blocks.append("\n".join([header, *(_trace_line(t) for t in traces)]))
    if not blocks:
        return "# no message in the file matches the mapping's input\n", False
    return "\n\n".join(blocks) + "\n", refused


def _trace_line(trace: FieldTrace) -> str:
    line = f"{trace.key} <- {trace.source}: {_short(trace.raw)!r} -> {_short(trace.value)!r}"
    return f"{line}  ERROR {trace.problem}" if trace.problem else line


def _short(text: str) -> str:
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    return f"{text[:_SHOWN_CHARACTERS]}… ({len(text)} characters)"
