"""Optional structure validation with hl7apy, per channel (``[source.validation]``).

hl7apy is imported only here and only when a channel asks for validation: it loads and
caches whole HL7 schema tables, which the hot path must not pay for. hl7apy 1.3.5 raises on
the first problem it finds, so a validation yields at most one problem.

``tolerant`` rejects only what hl7apy cannot parse at all; ``strict`` also checks
cardinality, data types and lengths (real senders' typing slips included, so it is opt-in).

hl7apy builds an object of ~1.5 KB for every component and spends ~0.1 ms on it, whatever
the level: a 1 MB NTE of ``^`` takes minutes and gigabytes. So :func:`ceiling_refusal`
counts separators (cheap, no hl7apy) and refuses to validate above a ceiling, and
:func:`validate` runs only in a worker process (:mod:`engine.channel.validation_worker`).
"""

from __future__ import annotations

from engine.message import Message
from engine.message.ack import AckError

_CODES = {  # hl7apy exception → HL7 table 0357
    "ChildNotFound": 101,
    "ChildNotValid": 100,
    "MaxChildLimitReached": 100,
    "InvalidDataType": 102,
    "InvalidDateFormat": 102,
    "InvalidDateOffset": 102,
    "InvalidMicrosecondsPrecision": 102,
    "MaxLengthReached": 104,
    "UnsupportedVersion": 203,
}
_DATA_TYPE_ERROR = 102
_SEGMENT_SEQUENCE_ERROR = 100


def ceiling_refusal(message: Message, max_bytes: int, max_components: int) -> AckError | None:
    """The refusal of a message too large to validate, or None: decided before any hl7apy work."""
    size = len(message.raw)
    if size > max_bytes:
        return _too_large(size, "bytes", max_bytes)
    count = components(message)
    if count > max_components:
        return _too_large(count, "components", max_components)
    return None


def components(message: Message) -> int:
    """The separators (field, component, repetition, subcomponent): each starts an element
    hl7apy builds an object for. Counted in C, ~1 ms per MB, with no hl7apy."""
    d = message.delimiters
    separators = {d.field, d.component, d.repetition, d.subcomponent}
    return sum(message.text.count(separator) for separator in separators)


def _too_large(count: int, unit: str, limit: int) -> AckError:
    return AckError(207, f"message too large to validate: {count} {unit}, limit {limit}")


def validate(raw_text: str, level: str, version: str | None = None) -> list[AckError]:
    """Problems hl7apy finds in ``raw_text`` at ``level`` (off | tolerant | strict).

    ``version`` validates against that HL7 version instead of the message's MSH-12.
    Texts name the rule broken, not the values (hl7apy's own messages may quote PHI).
    """
    if level == "off":
        return []
    from hl7apy import consts, exceptions, parser

    text = raw_text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    if version:
        text = _with_version(text, version)
    strict = level == "strict"
    validation_level = consts.VALIDATION_LEVEL.STRICT if strict else consts.VALIDATION_LEVEL.TOLERANT
    try:
        message = parser.parse_message(text, validation_level=validation_level, find_groups=True)
        if strict:
            message.validate()
    except exceptions.HL7apyException as exc:
        name = type(exc).__name__
        code = _CODES.get(name, _SEGMENT_SEQUENCE_ERROR)
        return [AckError(code, f"message fails {level} HL7 validation ({name})")]
    except ValueError:  # hl7apy's data type parsers raise plain ValueError for bad values
        return [AckError(_DATA_TYPE_ERROR, f"message fails {level} HL7 validation (data type)")]
    return []


def _with_version(text: str, version: str) -> str:
    """``text`` with MSH-12 replaced; the MSH field separator is its 4th character."""
    separator = text[3:4] or "|"
    header, _, rest = text.partition("\r")
    fields = header.split(separator)
    fields += [""] * max(0, 12 - len(fields))
    fields[11] = version
    return separator.join(fields) + ("\r" + rest if rest else "")
