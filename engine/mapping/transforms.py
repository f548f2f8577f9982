"""The closed list of named transforms a mapping field may apply, in order, to its value.

Each transform is declared once in :data:`TRANSFORMS` (name, argument, options, doc) so the
loader can refuse unknown names with a suggestion and the README table can be generated from
the same list. ``compile_transform`` turns one TOML entry (``"upper"`` or ``{ date = "%Y" }``)
into a :class:`Step` at load time; running a step is then one function call per value.

Values are strings, except that ``all = true`` fields carry a list until ``join`` and
``number`` yields an int or float. A failing step raises :class:`TransformError` with the HL7
table 0357 code; its reason names the problem, never the value (it may be PHI).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.mapping.checks import nhs_number_problem, sctid_problem
from engine.mapping.dates import DateError, format_dtm, is_offset

REQUIRED_FIELD_MISSING, DATA_TYPE_ERROR, TABLE_VALUE_NOT_FOUND = 101, 102, 103

Value = Any  # str, list[str] before ``join``, or int/float after ``number``
Apply = Callable[[str], Value]


class TransformError(ValueError):
    """A value a transform cannot accept; ``code`` is from HL7 table 0357."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class TransformSpec:
    """One named transform as the grammar declares it."""

    name: str
    doc: str
    argument: str | None = None  # what the ``{ name = argument }`` value is; None: bare name only
    options: tuple[str, ...] = ()  # further keys allowed beside the argument
    combines_list: bool = False  # applies to the whole list (``join``), not to each item


@dataclass(frozen=True)
class Step:
    """A compiled transform, ready to run."""

    name: str
    apply: Apply
    combines_list: bool = False


TRANSFORMS: dict[str, TransformSpec] = {
    spec.name: spec
    for spec in (
        TransformSpec("strip", "remove leading and trailing whitespace"),
        TransformSpec("upper", "upper-case"),
        TransformSpec("lower", "lower-case"),
        TransformSpec("digits_only", "keep only the digits 0-9 (e.g. '943 476 5919')"),
        TransformSpec(
            "date",
            "HL7 DTM of any precision and offset to a strftime format, or 'rfc3339'; "
            "assume_offset (default '+0000') is used for RFC 3339 when the value has none",
            argument="strftime format or 'rfc3339'",
            options=("assume_offset",),
        ),
        TransformSpec(
            "lookup",
            "replace the value by its entry in [lookups.<name>]; a missing entry is error 103 "
            "unless the default option is set",
            argument="lookup table name",
            options=("default",),
        ),
        TransformSpec("base64_check", "refuse text that is not Base64; whitespace is removed"),
        TransformSpec("max_len", "cut the text to at most N characters", argument="N"),
        TransformSpec(
            "join",
            "join the values of an all = true field into one string",
            argument="separator",
            combines_list=True,
        ),
        TransformSpec(
            "uuid5",
            "a deterministic UUID (RFC 4122 version 5) of the value, e.g. of a template "
            "'{context.channel}/{MSH-3}/{MSH-4}/{MSH-10}'",
            argument="namespace: 'dns', 'url', 'oid', 'x500' or a UUID",
        ),
        TransformSpec("number", "the text as a JSON number (int or float); error 102 if not one"),
        TransformSpec("nhs_number", "validate an NHS number (10 digits, modulus 11); error 102"),
        TransformSpec("snomed_id", "validate a SNOMED CT id (partition, Verhoeff check digit); error 102"),
    )
}

_UUID_NAMESPACES = {
    "dns": uuid.NAMESPACE_DNS,
    "url": uuid.NAMESPACE_URL,
    "oid": uuid.NAMESPACE_OID,
    "x500": uuid.NAMESPACE_X500,
}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")


def compile_transform(entry: object, lookups: Mapping[str, Mapping[str, str]]) -> Step:
    """Build the :class:`Step` for one ``transforms`` entry; ``ValueError`` says what is wrong.

    The loader turns the ``ValueError`` into a ConfigError naming file, key path and line.
    """
    if isinstance(entry, str):
        name, argument, options = entry, None, {}
    elif isinstance(entry, dict) and entry:
        name = next(iter(entry))
        argument, options = entry[name], {k: v for k, v in entry.items() if k != name}
    else:
        raise ValueError('a transform is a name ("upper") or a table ({ date = "%Y-%m-%d" })')
    spec = TRANSFORMS.get(name)
    if spec is None:
        raise ValueError(f"unknown transform {name!r}{_hint(name, TRANSFORMS)}")
    if spec.argument is None and argument is not None:
        raise ValueError(f'transform {name!r} takes no argument; write it as "{name}"')
    if spec.argument is not None and argument is None:
        raise ValueError(f"transform {name!r} needs an argument: {{ {name} = <{spec.argument}> }}")
    for option in options:
        if option not in spec.options:
            raise ValueError(f"transform {name!r} has no option {option!r}")
    return Step(name, _BUILDERS[name](argument, options, lookups), spec.combines_list)


def _hint(name: str, known: Mapping[str, object]) -> str:
    """`` (did you mean 'x'?)`` — the wording ``courier check`` shows for names used as values."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fixed(function: Apply) -> Callable[..., Apply]:
    return lambda _argument, _options, _lookups: function


def _digits_only(value: str) -> str:
    return "".join(ch for ch in value if "0" <= ch <= "9")


def _base64_check(value: str) -> str:
    compact = "".join(value.split())  # 20x faster than a regex on a PDF-sized value
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TransformError(DATA_TYPE_ERROR, "the value is not valid Base64") from exc
    return compact


def _number(value: str) -> int | float:
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        raise TransformError(DATA_TYPE_ERROR, "the value is not a number")
    return float(text) if "." in text else int(text)


def _validator(problem_of: Callable[[str], str | None]) -> Apply:
    def validate(value: str) -> str:
        problem = problem_of(value)
        if problem is not None:
            raise TransformError(DATA_TYPE_ERROR, problem)
        return value

    return validate


def _date(argument: object, options: Mapping[str, object], _lookups: object) -> Apply:
    if not isinstance(argument, str) or not argument:
        raise ValueError('date needs a strftime format such as "%Y-%m-%d", or "rfc3339"')
    assume_offset = options.get("assume_offset", "+0000")
    if not isinstance(assume_offset, str) or not is_offset(assume_offset):
        raise ValueError("assume_offset must look like +0000 or -0500")

    def apply(value: str) -> str:
        try:
            return format_dtm(value, argument, assume_offset=assume_offset)
        except DateError as exc:
            raise TransformError(DATA_TYPE_ERROR, str(exc)) from exc

    return apply


def _lookup(argument: object, options: Mapping[str, object], lookups: Mapping) -> Apply:
    if not isinstance(argument, str) or argument not in lookups:
        raise ValueError(f"unknown lookup {argument!r}{_hint(str(argument), lookups)}")
    table = lookups[argument]
    default = options.get("default")
    if default is not None and not isinstance(default, str):
        raise ValueError("the lookup default must be a string")

    def apply(value: str) -> str:
        found = table.get(value, default)
        if found is None:
            reason = f"the value has no entry in lookup {argument!r}"
            raise TransformError(TABLE_VALUE_NOT_FOUND, reason)
        return found

    return apply


def _max_len(argument: object, _options: object, _lookups: object) -> Apply:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 1:
        raise ValueError("max_len needs a positive whole number")
    return lambda value: value[:argument]


def _join(argument: object, _options: object, _lookups: object) -> Apply:
    if not isinstance(argument, str):
        raise ValueError('join needs a separator string, e.g. { join = ", " }')
    return lambda values: argument.join(v for v in values if v != "")


def _uuid5(argument: object, _options: object, _lookups: object) -> Apply:
    namespace = _UUID_NAMESPACES.get(argument) if isinstance(argument, str) else None
    if namespace is None:
        try:
            namespace = uuid.UUID(str(argument))
        except ValueError:
            raise ValueError("uuid5 needs a namespace: dns, url, oid, x500 or a UUID") from None
    return lambda value: str(uuid.uuid5(namespace, value))


_BUILDERS: dict[str, Callable[..., Apply]] = {
    "strip": _fixed(str.strip),
    "upper": _fixed(str.upper),
    "lower": _fixed(str.lower),
    "digits_only": _fixed(_digits_only),
    "date": _date,
    "lookup": _lookup,
    "base64_check": _fixed(_base64_check),
    "max_len": _max_len,
    "join": _join,
    "uuid5": _uuid5,
    "number": _fixed(_number),
    "nhs_number": _fixed(_validator(nhs_number_problem)),
    "snomed_id": _fixed(_validator(sctid_problem)),
}
