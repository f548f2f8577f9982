"""ACK messages built from the received message (original and enhanced mode, v2.3 to v2.8).

The ACK is the only thing the sender sees of our decision, so it follows the receiving
version's rules: before v2.5 errors go into ERR-1 (ELD) and MSA-3; from v2.5 into ERR-2/3/4/8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from engine.errors import MessageError
from engine.message.batch import Batch
from engine.message.delimiters import DEFAULT_DELIMITERS, Delimiters
from engine.message.escapes import escape
from engine.message.path import Path
from engine.message.reader import HEADER_SEGMENTS, Message

ACCEPT, ERROR, REJECT = "A", "E", "R"
_OUTCOMES = (ACCEPT, ERROR, REJECT)

ERROR_CODES = {  # HL7 table 0357, the codes an engine reports
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
SEVERITIES = ("E", "W", "I", "F")  # HL7 table 0516; "F" exists from v2.7


@dataclass(frozen=True)
class SegmentLocation:
    """A whole segment as an ERR-2 location, ``SEG^sequence`` with no field: the second MSH of a
    frame (``MSH^2``), or a line with no readable name (``^5``: its position, MSH being 1)."""

    segment: str
    sequence: int

    def erl(self, delimiters: Delimiters = DEFAULT_DELIMITERS) -> str:
        return delimiters.component.join([self.segment, str(self.sequence)])


@dataclass(frozen=True)
class AckError:
    """One problem to report in an ERR segment."""

    code: int  # HL7 table 0357
    text: str  # human-readable; escaped when written
    location: Path | SegmentLocation | None = None
    severity: str = "E"  # HL7 table 0516

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"{self.code} is not an HL7 table 0357 error code")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.severity!r} is not an HL7 table 0516 severity")


def is_enhanced_mode(message: Message) -> bool:
    """Enhanced acknowledgement mode is asked for by valuing MSH-15 or MSH-16."""
    return bool(message.accept_ack_type.strip() or message.application_ack_type.strip())


def commit_ack_wanted(message: Message, outcome: str) -> bool:
    """Whether the sender wants the immediate ACK for this outcome (MSH-15, table 0155).

    Original mode always gets its one ACK. In enhanced mode an empty or unknown MSH-15 is
    answered too: an unwanted ACK costs less than a sender left waiting.
    """
    _check_outcome(outcome)
    if not is_enhanced_mode(message):
        return True
    condition = message.accept_ack_type.strip().upper()
    if condition == "NE":
        return False
    if condition == "ER":
        return outcome != ACCEPT
    if condition == "SU":
        return outcome == ACCEPT
    return True


def ack_wanted(message: Message, outcome: str, *, enhanced: bool) -> bool:
    """Whether to answer ``message`` at all: the one rule every receiver here follows.

    An inbound ACK is answered only when its MSH-15 explicitly asks for a commit ACK (as a
    status message in enhanced mode does): answering any other ACK makes two engines loop.
    Anything else gets its ACK in original mode, and in enhanced mode as MSH-15 asks.
    """
    if message.message_type == "ACK":
        return enhanced and bool(message.accept_ack_type.strip()) and commit_ack_wanted(message, outcome)
    return not enhanced or commit_ack_wanted(message, outcome)


def build_ack(
    message: Message,
    outcome: str,
    *,
    control_id: str,
    timestamp: datetime,
    errors: Sequence[AckError] = (),
    enhanced: bool | None = None,
    processing_id: str | None = None,
) -> bytes:
    """An ACK to ``message``: AA/AE/AR in original mode, CA/CE/CR in enhanced mode.

    ``enhanced=None`` decides from MSH-15/16. A non-accept outcome without errors reports
    207 (application internal error), so every AE/AR carries an ERR segment.
    """
    _check_outcome(outcome)
    if enhanced is None:
        enhanced = is_enhanced_mode(message)
    if outcome != ACCEPT and not errors:
        errors = (AckError(207, ERROR_CODES[207]),)
    d = message.delimiters
    msh = message.msh
    if processing_id is not None:
        processing_id = escape(processing_id, d)
    sender = (msh.field(3), msh.field(4), msh.field(5), msh.field(6))
    received = (msh.field(11) if processing_id is None else processing_id, msh.field(12), msh.field(18))
    code = ("C" if enhanced else "A") + outcome
    shape = _ack_shape(
        d, message.charset, sender, received, message.trigger_event, message.version, code, tuple(errors)
    )
    return shape.fill(_dtm(timestamp), escape(control_id, d), msh.field(10))


# Where MSH-7, MSH-10 and MSA-2 go in an ACK's shape. A CR cannot occur inside a segment, so
# these can never be mistaken for text copied from the received message.
_TIME, _OURS, _THEIRS = "\r7\r", "\r10\r", "\rMSA-2\r"


@dataclass(frozen=True)
class _AckShape:
    """An ACK with its three per-message values left out: text around them, and the charset."""

    parts: tuple[str, str, str, str]
    charset: str

    def fill(self, timestamp: str, control_id: str, original_control_id: str) -> bytes:
        a, b, c, rest = self.parts
        text = "".join((a, timestamp, b, control_id, c, original_control_id, rest))
        return text.encode(self.charset, errors="replace")


@lru_cache(maxsize=256)
def _ack_shape(
    d: Delimiters,
    charset: str,
    sender: tuple[str, str, str, str],
    received: tuple[str, str, str],
    trigger_event: str,
    version_id: str,
    code: str,
    errors: tuple[AckError, ...],
) -> _AckShape:
    """Everything of an ACK but its time and the two control IDs.

    A sender's ACKs differ only in those three values, so the rest is built once per sender
    and outcome, not for every message: that took the ACK from 15 to 6 µs on the reactor thread.
    """
    application, facility, receiving_application, receiving_facility = sender
    processing_id, version_field, charsets = received
    version = _version(version_id)
    message_type = ["ACK", escape(trigger_event, d)]
    if version >= (2, 3, 1):  # MSH-9.3 message structure exists from v2.3.1
        message_type.append("ACK")
    header = _segment(
        "MSH",
        d,
        {
            2: d.encoding_characters,
            3: receiving_application,
            4: receiving_facility,
            5: application,
            6: facility,
            7: _TIME,
            9: d.component.join(message_type),
            10: _OURS,
            11: processing_id,
            12: version_field,
            18: charsets,
        },
    )
    text = "".join(segment + "\r" for segment in [header, *_msa_and_err(d, version, code, _THEIRS, errors)])
    a, rest = text.split(_TIME)
    b, rest = rest.split(_OURS)
    c, rest = rest.split(_THEIRS)
    return _AckShape((a, b, c, rest), charset)


def readable_for_nak(payload: bytes) -> Message | None:
    """A frame whose handling failed, read again as latin-1 (which decodes any bytes, so what
    broke its handling cannot break its NAK too); None when it has no readable MSH."""
    try:
        return Message.parse(payload, default_charset="latin-1", force_charset=True)
    except MessageError:
        return None


def build_unreadable_nak(*, control_id: str, timestamp: datetime, error: AckError) -> bytes:
    """An AR for content that is not HL7 at all: default delimiters, v2.5, MSA-2 left empty."""
    d = DEFAULT_DELIMITERS
    header = _segment(
        "MSH",
        d,
        {
            2: d.encoding_characters,
            7: _dtm(timestamp),
            9: "ACK",
            10: escape(control_id, d),
            11: "P",
            12: "2.5",
        },
    )
    return _encode([header, *_msa_and_err(d, (2, 5), "AR", "", [error])], "ascii")


def build_batch_ack(batch: Batch, acks: Sequence[bytes], *, control_id: str, timestamp: datetime) -> bytes:
    """An acknowledgement batch: header(s) answering the received one, the ACKs, trailer(s).

    A received FHS gets FHS + BHS ... BTS + FTS back, a BHS gets BHS ... BTS. FHS-12/BHS-12
    carry the received header's control ID (field 11); with an FHS the inner BHS-12 stays empty
    because the received BHS control ID is not kept.
    """
    received = batch.header
    d = received.delimiters if received is not None else DEFAULT_DELIMITERS
    charset = received.charset if received is not None else "ascii"
    header = received.msh if received is not None else None
    fields = {2: d.encoding_characters, 7: _dtm(timestamp), 11: escape(control_id, d)}
    if header is not None:
        fields.update(
            {
                3: header.field(5),
                4: header.field(6),
                5: header.field(3),
                6: header.field(4),
                12: header.field(11),
            }
        )
    trailer = _segment("BTS", d, {1: str(len(acks))})
    if header is not None and header.name == "FHS":
        opening = [_segment("FHS", d, fields), _segment("BHS", d, {**fields, 12: ""})]
        closing = [trailer, _segment("FTS", d, {1: "1"})]
    else:
        opening, closing = [_segment("BHS", d, fields)], [trailer]
    body = b"".join(ack if ack.endswith(b"\r") else ack + b"\r" for ack in acks)
    return _encode(opening, charset) + body + _encode(closing, charset)


def _check_outcome(outcome: str) -> None:
    if outcome not in _OUTCOMES:
        raise ValueError(f"outcome must be one of {_OUTCOMES}, got {outcome!r}")


def _msa_and_err(
    d: Delimiters,
    version: tuple[int, ...],
    code: str,
    original_control_id: str,
    errors: Sequence[AckError],
) -> list[str]:
    """MSA (MSA-2 always the original MSH-10, raw) and the ERR segment(s) in the version's style."""
    if not errors:
        return [_segment("MSA", d, {1: code, 2: original_control_id}, keep=2)]
    if version < (2, 5):
        text = escape("; ".join(error.text for error in errors), d)
        msa = _segment("MSA", d, {1: code, 2: original_control_id, 3: text})
        locations = d.repetition.join(_error_code_and_location(error, d) for error in errors)
        return [msa, _segment("ERR", d, {1: locations})]
    msa = _segment("MSA", d, {1: code, 2: original_control_id}, keep=2)
    return [msa, *(_err(error, d, version) for error in errors)]


def _err(error: AckError, d: Delimiters, version: tuple[int, ...]) -> str:
    """A v2.5+ ERR: ERR-2 location, ERR-3 code^text^HL70357, ERR-4 severity, ERR-8 text."""
    text = escape(error.text, d)
    severity = "E" if error.severity == "F" and version < (2, 7) else error.severity
    return _segment(
        "ERR",
        d,
        {
            2: error.location.erl(d) if error.location else "",
            3: d.component.join([str(error.code), text, "HL70357"]),
            4: severity,
            8: text,
        },
    )


def _error_code_and_location(error: AckError, d: Delimiters) -> str:
    """A pre-v2.5 ERR-1 (ELD): ``SEG^sequence^field^code&text&HL70357``."""
    place = (error.location.erl(d).split(d.component) if error.location else [])[:3]
    place += [""] * (3 - len(place))
    coded = d.subcomponent.join([str(error.code), escape(error.text, d), "HL70357"])
    return d.component.join([*place, coded])


def _segment(name: str, d: Delimiters, fields: Mapping[int, str], keep: int = 0) -> str:
    """One segment from field number → raw text; trailing empty fields dropped, but at least
    ``keep`` fields written. Header segments (MSH/FHS/BHS) start at field 2, as field 1 is the
    separator itself."""
    first = 2 if name in HEADER_SEGMENTS else 1
    last = max([n for n, value in fields.items() if value] + [keep, first - 1])
    return d.field.join([name, *(fields.get(n, "") for n in range(first, last + 1))])


def _encode(segments: Sequence[str], charset: str) -> bytes:
    """Segments each ended by CR, in the message's character set."""
    return "".join(segment + "\r" for segment in segments).encode(charset, errors="replace")


def _version(text: str) -> tuple[int, ...]:
    """MSH-12 as numbers (``"2.5.1"`` → ``(2, 5, 1)``); unreadable → 2.5, today's baseline."""
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        return (2, 5)


def _dtm(timestamp: datetime) -> str:
    """HL7 DTM with its UTC offset, e.g. ``20240131142501+0100``."""
    offset = timestamp.utcoffset()
    if offset is None:
        raise ValueError("ACK timestamps must be timezone-aware")
    return _dtm_text(timestamp, offset)


@lru_cache(maxsize=8)
def _dtm_text(timestamp: datetime, offset: timedelta) -> str:
    """Kept per second and offset: every ACK of one second has the same time. (Two equal
    instants in different zones are equal datetimes, hence the offset in the key.)"""
    return timestamp.strftime("%Y%m%d%H%M%S%z")
