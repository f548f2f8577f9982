"""HL7 batch files: ``[FHS] {[BHS] {MSH ...} [BTS]} [FTS]`` → the messages inside.

Works on bytes, before any decoding, so a batch can be split on the hot path and each message
then read with its own MSH-18 character set.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import MessageError
from engine.message.reader import LEADING_JUNK, Message

_HEADERS = (b"FHS", b"BHS")
_TRAILERS = (b"BTS", b"FTS")
_JUNK = b" \t\x00"
_NOT_A_LINE_START = _JUNK + b"\r\n"
_NOT_A_LINE_START_AFTER_CR = {bytes([c]) for c in _JUNK + b"\r"}  # b"" (the end) is fine


@dataclass(frozen=True)
class Batch:
    """What a received batch holds; the envelope lines themselves are not kept."""

    header: Message | None  # FHS or BHS line read as a header (its own delimiters)
    messages: list[bytes]  # each message's bytes, MSH first, segments ended by CR
    declared_count: int | None  # BTS-1 (summed over batches) if present and numeric


def split_batch(data: bytes) -> Batch | None:
    """Split a batch into its messages; None when ``data`` does not start with FHS or BHS.

    The header is the first FHS/BHS line; it is None when that line is unreadable, so the
    messages can still be acknowledged one by one.
    """
    if _name(data.lstrip(LEADING_JUNK)) not in _HEADERS:
        return None
    lines = _segment_lines(data)
    try:
        header = Message.parse_envelope(lines[0])
    except MessageError:
        header = None
    return Batch(header, _messages(lines), _declared_count(lines))


def split_file(data: bytes) -> list[bytes]:
    """One or many messages from a file (for ``courier send``), batch envelope lines dropped.

    Tolerates CR, LF and CRLF line ends and blank lines.
    """
    return _messages(_segment_lines(data))


def canonical(data: bytes) -> bytes:
    """``data`` as the duplicate check compares it: segments ended by CR whatever the sender's
    line ends (CR, LF, CRLF, none after the last), without leading junk, blank lines or
    trailing spaces and tabs. A resend through another interface differs only in these."""
    if _already_canonical(data):  # the common case, and no copy of a 200 KB message
        return data if data.endswith(b"\r") else data + b"\r"
    return b"".join(line.rstrip(b" \t") + b"\r" for line in _segment_lines(data))


def _already_canonical(data: bytes) -> bool:
    """Whether :func:`canonical` would only end ``data`` with a CR: no LF, and no line that is
    blank, starts with junk or ends with a space or tab. One look around each CR (found by
    ``bytes.find``), as this runs for every message stored."""
    if not data or data[0] in _NOT_A_LINE_START or data[-1] in b" \t" or b"\n" in data:
        return False
    find = data.find
    end = find(13)  # CR
    while end >= 0:
        if data[end - 1] in b" \t" or data[end + 1 : end + 2] in _NOT_A_LINE_START_AFTER_CR:
            return False
        end = find(13, end + 1)
    return True


def _segment_lines(data: bytes) -> list[bytes]:
    """Non-blank segment lines, whatever the line ends."""
    lines = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    return [line.lstrip(_JUNK) for line in lines if line.strip(_JUNK)]


def _messages(lines: list[bytes]) -> list[bytes]:
    """Group lines into messages, each starting at an MSH; envelope lines are skipped."""
    messages: list[list[bytes]] = []
    for number, line in enumerate(lines, start=1):
        name = _name(line)
        if name in _HEADERS or name in _TRAILERS:
            continue
        if name == b"MSH":
            messages.append([line])
        elif messages:
            messages[-1].append(line)
        else:
            raise MessageError(f"segment {line[:3].decode('latin-1')!r} on line {number} precedes any MSH")
    return [b"".join(segment + b"\r" for segment in message) for message in messages]


def _name(line: bytes) -> bytes:
    """The segment name a batch line starts with, as the reader reads one: three characters then
    a separator or the end (``BTSX|`` is no trailer, ``MSHX`` no message); ``b""`` otherwise."""
    name = line[:3]
    return name if len(line) == 3 or not line[3:4].isalnum() else b""


def _declared_count(lines: list[bytes]) -> int | None:
    """The sum of BTS-1 message counts; None when there is no BTS or a count is not a number."""
    counts = [_first_field(line) for line in lines if _name(line) == b"BTS"]
    if not counts or not all(count.isdigit() for count in counts):
        return None
    return sum(int(count) for count in counts)


def _first_field(line: bytes) -> bytes:
    """Field 1 of a trailer line, split on the field separator the line itself uses."""
    return line[4:].split(line[3:4])[0].strip() if len(line) > 4 else b""
