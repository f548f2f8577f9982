"""Check a mapped payload against a destination's declared ``payload_spec``.

The payload spec is an :class:`engine.spec.Spec` so ``courier check`` can compare a mapping's
output keys with it; this module applies the same declaration to one payload at mapping time
and reports in HL7 table-0357 terms (101 missing, 102 data type, 103 table value,
207 for a key the destination does not know: a mapping error). Mappings
produce text, so numbers and booleans are also accepted as their usual spellings
("140", "true"); :func:`as_number` and :func:`as_bool` give the values the vendor wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.destinations.base import Problem
from engine.spec import Field, Spec

MISSING = 101
DATA_TYPE = 102
TABLE_VALUE = 103
TOO_LONG = 104
INTERNAL = 207

_BOOLEAN_WORDS = {"true": True, "false": False}


def as_bool(value: Any) -> bool | None:
    """``True``/``False`` from a bool or the words true/false (any case); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _BOOLEAN_WORDS.get(value.strip().lower())
    return None


def as_number(value: Any) -> int | float | None:
    """An int or float from a number or its decimal text; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                continue
    return None


def is_blank(value: Any) -> bool:
    """Missing in HL7's sense: absent, None, empty text or an empty list."""
    return value is None or value == "" or value == [] or value == ()


def check_payload(spec: Spec, payload: Mapping[str, Any], prefix: str = "") -> list[Problem]:
    """Required keys, value types and declared choices; vendor rules come on top of this."""
    problems: list[Problem] = []
    for key in payload:
        if spec.field(key) is None:  # the mapping, not the sender, is wrong: `courier check`
            problems.append(Problem(prefix + key, INTERNAL, f"{spec.name} has no field {key}"))
    for field in spec.fields:
        key = prefix + field.name
        value = payload.get(field.name)
        if is_blank(value):
            if field.required:
                problems.append(Problem(key, MISSING, f"{key} is required"))
            continue
        problems += _check_value(field, key, value)
    return problems


def _check_value(field: Field, key: str, value: Any) -> list[Problem]:
    if field.kind == "objects":
        if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
            return [Problem(key, DATA_TYPE, f"{key} must be a list of tables")]
        return [
            problem
            for i, item in enumerate(value)
            for problem in check_payload(field.spec, item, f"{key}[{i}].")
        ]
    if field.kind == "list":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            return [Problem(key, DATA_TYPE, f"{key} must be a list of strings")]
        return []
    converted = _CONVERTERS.get(field.kind, _as_text)(value)
    if converted is None or (field.kind == "int" and not isinstance(converted, int)):
        return [Problem(key, DATA_TYPE, f"{key} must be {field.type_name}")]
    if field.choices is not None and converted not in field.choices:
        allowed = ", ".join(str(c) for c in field.choices)
        return [Problem(key, TABLE_VALUE, f"{key} must be one of {allowed}")]
    if field.min is not None and converted < field.min:
        return [Problem(key, DATA_TYPE, f"{key} must be at least {field.min:g}")]
    if field.max is not None and converted > field.max:
        return [Problem(key, DATA_TYPE, f"{key} must be at most {field.max:g}")]
    return []


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_CONVERTERS = {"bool": as_bool, "int": as_number, "float": as_number}
