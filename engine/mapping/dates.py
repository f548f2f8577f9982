"""HL7 DTM values (``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``) to formatted text.

HL7 lets a sender stop at any precision, so a format that asks for a part the value does not
carry (``%d`` from ``198001``) is a data type error rather than an invented day. RFC 3339 always
needs a full date-time: missing time parts become zero and a missing offset becomes the
``assume_offset`` given (UTC by default), because HL7 leaves such values in the sender's zone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

RFC3339 = "rfc3339"

_DTM = re.compile(
    r"(?P<year>\d{4})(?P<month>\d{2})?(?P<day>\d{2})?(?P<hour>\d{2})?(?P<minute>\d{2})?"
    r"(?P<second>\d{2})?(?:\.(?P<fraction>\d{1,4}))?(?P<offset>[+-]\d{4})?"
)
_OFFSET = re.compile(r"[+-]\d{4}")
_PRECISION_ORDER = ("year", "month", "day", "hour", "minute", "second", "fraction")
# The first precision each strftime directive needs; directives not listed need only the year.
_DIRECTIVE_NEEDS = {
    "m": "month",
    "b": "month",
    "B": "month",
    "h": "month",
    "d": "day",
    "j": "day",
    "a": "day",
    "A": "day",
    "w": "day",
    "u": "day",
    "e": "day",
    "H": "hour",
    "I": "hour",
    "p": "hour",
    "M": "minute",
    "S": "second",
    "f": "fraction",
}


class DateError(ValueError):
    """The value is not an HL7 DTM, or lacks the precision the format asks for."""


@dataclass(frozen=True)
class HL7DateTime:
    """A parsed DTM: the moment, how precise it is, and whether an offset was sent."""

    moment: datetime
    precision: str  # one of _PRECISION_ORDER
    fraction_digits: int
    has_offset: bool


def parse_dtm(text: str) -> HL7DateTime:
    """Parse an HL7 DTM (also TS.1 and DT) of any precision, with or without ``±ZZZZ``."""
    match = _DTM.fullmatch(text.strip())
    if match is None:
        raise DateError("not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]][+/-ZZZZ])")
    parts = match.groupdict()
    precision = [name for name in _PRECISION_ORDER if parts[name] is not None][-1]
    fraction = parts["fraction"] or ""
    offset = parts["offset"]
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction.ljust(6, "0")) if fraction else 0,
            tzinfo=_zone(offset) if offset else None,
        )
    except ValueError as exc:
        raise DateError("the date/time has an impossible component") from exc
    return HL7DateTime(moment, precision, len(fraction), offset is not None)


def needed_precision(strftime_format: str) -> str:
    """The finest precision a strftime format reads, so too-coarse values can be refused."""
    needed = "year"
    for directive in re.findall(r"%(.)", strftime_format.replace("%%", "")):
        wanted = _DIRECTIVE_NEEDS.get(directive, "year")
        if _PRECISION_ORDER.index(wanted) > _PRECISION_ORDER.index(needed):
            needed = wanted
    return needed


def format_dtm(text: str, fmt: str, *, assume_offset: str = "+0000") -> str:
    """Format an HL7 DTM with a strftime ``fmt``, or as RFC 3339 when ``fmt`` is ``"rfc3339"``."""
    value = parse_dtm(text)
    if fmt == RFC3339:
        return _rfc3339(value, assume_offset)
    needed = needed_precision(fmt)
    if _PRECISION_ORDER.index(value.precision) < _PRECISION_ORDER.index(needed):
        raise DateError(f"the date/time is less precise than the format needs ({needed})")
    return value.moment.strftime(fmt)


def is_offset(text: str) -> bool:
    """True for an offset written the HL7 way, ``+HHMM`` or ``-HHMM``."""
    return _OFFSET.fullmatch(text) is not None


def _rfc3339(value: HL7DateTime, assume_offset: str) -> str:
    moment = value.moment if value.has_offset else value.moment.replace(tzinfo=_zone(assume_offset))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if value.fraction_digits:
        text += "." + f"{moment.microsecond:06d}"[: value.fraction_digits]
    offset = moment.utcoffset()
    if offset == timedelta(0):
        return text + "Z"
    zone = moment.strftime("%z")
    return f"{text}{zone[:3]}:{zone[3:]}"


def _zone(offset: str) -> timezone:
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[3:5])
    if hours > 23 or minutes > 59:
        raise DateError("the time zone offset is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))
