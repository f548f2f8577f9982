"""A lean, lazy HL7 v2 reader for the hot path: frame bytes → :class:`Message`.

``hl7.parse`` builds the whole tree up front (about 1.5 ms for a 2 KB ORU^R01); routing and
ACKs only need MSH, so this reader decodes the text, splits MSH, and splits the rest of the
message into segments only when somebody asks. Values are unescaped on access.
"""

from __future__ import annotations

import codecs
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from functools import lru_cache
from typing import overload

from engine.errors import MessageError
from engine.message.charsets import codec_for
from engine.message.delimiters import Delimiters
from engine.message.display import printable
from engine.message.escapes import unescape
from engine.message.path import SEGMENT_NAME, Path

__all__ = ["Delimiters", "Message", "Segment"]

LEADING_JUNK = b" \t\r\n\x00"  # what senders put before MSH; stripped, never an error
HEADER_SEGMENTS = ("MSH", "FHS", "BHS")  # segments whose 1st field is the field separator itself


class Segment:
    """One segment; its fields are split on first access and kept raw (still escaped).

    A segment is the span ``text[start:end]`` of its message's text, copied out only when a
    field is read: a 200 KB base64 OBX that routing and mapping never read is never copied.
    """

    __slots__ = (
        "name",
        "index",
        "occurrence",
        "_text",
        "_start",
        "_end",
        "_delimiters",
        "_charset",
        "_fields",
    )

    def __init__(
        self,
        name: str,
        text: str,
        start: int,
        end: int,
        index: int,
        occurrence: int,
        delimiters: Delimiters,
        charset: str,
    ) -> None:
        self.name = name  # text[start:end][:3], sliced once by the caller
        self.index = index
        self.occurrence = occurrence
        self._text = text
        self._start = start
        self._end = end
        self._delimiters = delimiters
        self._charset = charset
        self._fields: list[str] | None = None

    def _split(self) -> list[str]:
        """Fields indexed by HL7 field number: ``fields[n]`` is SEG-n, ``fields[0]`` the name."""
        if self._fields is None:
            fields = self._text[self._start : self._end].split(self._delimiters.field)
            if self.name in HEADER_SEGMENTS:
                fields.insert(1, self._delimiters.field)  # MSH-1 *is* the field separator
            self._fields = fields
        return self._fields

    def __len__(self) -> int:
        return len(self._split()) - 1

    def __bool__(self) -> bool:
        """A segment that is there is true, even one without fields (``ZDS``), and testing it
        splits nothing (without this, truth would be :meth:`__len__`)."""
        return True

    def __repr__(self) -> str:  # no field contents: they may hold PHI
        return f"<Segment {self.name} index={self.index} occurrence={self.occurrence}>"

    def field(self, n: int) -> str:
        """Raw (still escaped) text of field ``n``; ``""`` when the segment is shorter."""
        if n < 1:
            raise ValueError(f"HL7 field numbers start at 1, got {n}")
        fields = self._split()
        return fields[n] if n < len(fields) else ""

    def _is_delimiter_field(self, n: int) -> bool:
        return n in (1, 2) and self.name in HEADER_SEGMENTS

    def repetitions(self, n: int) -> list[str]:
        """Raw repetitions of field ``n``; an empty field has none."""
        raw = self.field(n)
        if not raw:
            return []
        if self._is_delimiter_field(n):
            return [raw]
        return raw.split(self._delimiters.repetition)

    def value(
        self,
        field: int,
        repetition: int = 1,
        component: int | None = None,
        subcomponent: int | None = None,
    ) -> str:
        """Decoded (unescaped) text at one position; ``""`` when absent.

        Without ``component`` the whole repetition is returned with escapes undone, so an
        escaped ``\\S\\`` and a real component separator then look alike.
        """
        raw = self.field(field)
        if self._is_delimiter_field(field) or not raw:
            return raw
        d = self._delimiters
        raw = _pick(raw, d.repetition, repetition)
        if subcomponent is not None and component is None:
            component = 1
        if component is not None:
            raw = _pick(raw, d.component, component)
            if subcomponent is not None:
                raw = _pick(raw, d.subcomponent, subcomponent)
        return unescape(raw, d, self._charset)


def _pick(text: str, separator: str, n: int) -> str:
    """The ``n``-th (1-based) part of ``text``, ``""`` when there are fewer parts."""
    if n < 1:
        raise ValueError(f"HL7 positions start at 1, got {n}")
    if separator not in text:
        return text if n == 1 else ""
    parts = text.split(separator)
    return parts[n - 1] if n <= len(parts) else ""


class _MSHShortcut:
    """A :class:`Message` attribute holding one decoded MSH value, read once then kept.

    Routing, the filter, the store and the ACK all read the same few MSH fields; keeping
    each in the instance's ``__dict__`` after the first read makes later reads free.
    """

    def __init__(self, field: int, component: int | None, doc: str) -> None:
        self.field = field
        self.component = component
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, message: Message | None, owner: type) -> str:
        if message is None:
            return self  # type: ignore[return-value]
        value = message.msh.value(self.field, 1, self.component)
        message.__dict__[self.name] = value
        return value


class Message:
    """A received HL7 v2 message: raw bytes, decoded text, delimiters, MSH and lazy segments."""

    raw: bytes
    text: str
    charset: str
    charset_problem: str | None
    delimiters: Delimiters
    msh: Segment

    def __init__(
        self,
        raw: bytes,
        text: str,
        charset: str,
        charset_problem: str | None,
        delimiters: Delimiters,
    ) -> None:
        self.raw = raw
        self.text = text
        self.charset = charset
        self.charset_problem = charset_problem
        self.delimiters = delimiters
        end = text.find("\r")
        end = len(text) if end < 0 else end
        self.msh = Segment(text[: min(3, end)], text, 0, end, 0, 1, delimiters, charset)
        self._segment_index: _Index | None = None

    @classmethod
    def parse(cls, data: bytes, *, default_charset: str = "ascii", force_charset: bool = False) -> Message:
        """Read a message; raise :class:`MessageError` when there is no readable MSH.

        The character set comes from MSH-18 (or ``default_charset`` when MSH-18 is empty, or
        always with ``force_charset``). When the bytes do not decode, we fall back to
        ``default_charset`` then latin-1 and say so in ``charset_problem``.
        """
        return cls._read(data, ("MSH",), default_charset, force_charset)

    @classmethod
    def parse_envelope(cls, data: bytes, *, default_charset: str = "ascii") -> Message:
        """Read a batch FHS or BHS header line, which is laid out like MSH (see ``batch``).

        Its ``msh`` is then the FHS/BHS segment; the MSH shortcuts do not apply to it.
        """
        return cls._read(data, ("FHS", "BHS"), default_charset, False)

    @classmethod
    def _read(cls, data: bytes, names: tuple[str, ...], default_charset: str, force_charset: bool) -> Message:
        body = data.lstrip(LEADING_JUNK)
        if not body:
            raise MessageError("empty message")
        name = body[:3].decode("latin-1")
        if name not in names:
            raise MessageError(f"message does not start with {'/'.join(names)}")
        header_end = _line_end(body)
        header = body[:header_end].decode("latin-1")
        delimiters = _delimiters(header)
        declared = "" if force_charset else _first_charset(header, delimiters)
        text, charset, problem = _decode(body, declared, default_charset)
        if "\n" in text:
            text = text.replace("\r\n", "\r").replace("\n", "\r")
        return cls(data, text, charset, problem, delimiters)

    def __repr__(self) -> str:  # control ID and type only: no PHI
        if self.msh.name != "MSH":
            return f"<Message {self.msh.name} envelope>"
        return f"<Message {self.message_type}^{self.trigger_event} control_id={self.control_id!r}>"

    @property
    def segments(self) -> Sequence[Segment]:
        """All segments in order, blank lines skipped; each made when first read."""
        return _Segments(self)

    def _index(self) -> _Index:
        if self._segment_index is None:
            self._segment_index = _Index(self)
        return self._segment_index

    def _segment_at(self, position: int, occurrence: int = 0) -> Segment:
        """The segment at ``position`` (0 is MSH), made once and kept; callers that know its
        occurrence under its name pass it."""
        index = self._index()
        segment = index.made.get(position)
        if segment is None:
            name = index.names[position]
            if not occurrence:
                occurrence = bisect_left(index.by_name[name], position) + 1
            segment = index.made[position] = Segment(
                name,
                self.text,
                index.starts[position],
                index.ends[position],
                position,
                occurrence,
                self.delimiters,
                self.charset,
            )
        return segment

    @property
    def unreadable_segment(self) -> int | None:
        """Position (MSH is 1, blank lines not counted) of the first line that is not a segment,
        or None. A segment name is exactly three characters (:data:`SEGMENT_NAME`) followed by
        the field separator or the end of the line: ``PIDX|`` is not a PID, nor ``PV|1`` a PV1.
        Such a line keeps what it starts with as its name, so no lookup by name finds it."""
        return self._index().unreadable

    @property
    def second_header(self) -> int | None:
        """Position of a second MSH segment (a frame holding two messages), or None."""
        headers = self._index().by_name.get("MSH", ()) if self.msh.name == "MSH" else ()
        return headers[1] + 1 if len(headers) > 1 else None

    def all(self, name: str) -> list[Segment]:
        """Every segment called ``name``, in order."""
        index = self._index()
        made, segment_at = index.made, self._segment_at
        positions = index.by_name.get(name, ())
        return [made.get(position) or segment_at(position, n) for n, position in enumerate(positions, 1)]

    def segment(self, name: str, occurrence: int = 1) -> Segment | None:
        """The ``occurrence``-th segment called ``name`` (1-based), or None."""
        if name == self.msh.name and occurrence == 1:
            return self.msh
        index = self._segment_index or self._index()
        positions = index.by_name.get(name, ())
        if 0 < occurrence <= len(positions):
            position = positions[occurrence - 1]
            return index.made.get(position) or self._segment_at(position, occurrence)
        return None

    def get(self, path: str | Path, default: str = "") -> str:
        """The decoded value at an HL7 path such as ``PID-5.1``; ``default`` if empty or absent."""
        if isinstance(path, str):
            path = Path.parse(path)
        segment = self.segment(path.segment, path.occurrence or 1)
        if segment is None:
            return default
        value = segment.value(path.field, path.repetition or 1, path.component, path.subcomponent)
        return value or default

    # MSH shortcuts: decoded strings, "" when absent.
    control_id = _MSHShortcut(10, None, "MSH-10 message control ID")
    message_type = _MSHShortcut(9, 1, "MSH-9.1 message type, e.g. ORU")
    trigger_event = _MSHShortcut(9, 2, "MSH-9.2 trigger event, e.g. R01")
    message_structure = _MSHShortcut(9, 3, "MSH-9.3 message structure, e.g. ORU_R01")
    processing_id = _MSHShortcut(11, 1, "MSH-11.1 processing ID: P, T or D")
    version = _MSHShortcut(12, 1, "MSH-12.1 version ID, e.g. 2.5.1")
    sending_application = _MSHShortcut(3, 1, "MSH-3.1")
    sending_facility = _MSHShortcut(4, 1, "MSH-4.1")
    receiving_application = _MSHShortcut(5, 1, "MSH-5.1")
    receiving_facility = _MSHShortcut(6, 1, "MSH-6.1")
    accept_ack_type = _MSHShortcut(15, None, "MSH-15 accept acknowledgement type (table 0155)")
    application_ack_type = _MSHShortcut(16, None, "MSH-16 application acknowledgement type (table 0155)")

    @property
    def character_sets(self) -> tuple[str, ...]:
        """MSH-18 repetitions; the first is the message's character set."""
        names = (unescape(rep, self.delimiters).strip() for rep in self.msh.repetitions(18))
        return tuple(name for name in names if name)


class _Index:
    """Where each segment of a message is: its span, its name (shared, not copied) and its
    position under that name. About 30 bytes a segment, so a frame of a million tiny lines costs
    megabytes, not a million objects; a :class:`Segment` is made only when somebody reads it.

    Spans are found with ``str.find``: ``text.split`` would copy every segment.
    """

    __slots__ = ("starts", "ends", "names", "by_name", "unreadable", "made")

    def __init__(self, message: Message) -> None:
        text, size, find, field = message.text, len(message.text), message.text.find, message.delimiters.field
        msh = message.msh
        starts, ends, names = array("q", [0]), array("q", [msh._end]), [msh.name]
        entries: dict[str, tuple[str, array[int]]] = {msh.name: (msh.name, array("q", [0]))}
        unreadable = None
        start = msh._end + 1
        while start < size:
            end = find("\r", start)
            if end < 0:
                end = size
            # Skip blank lines; only a line that starts with whitespace is sliced to check.
            if start < end and not (text[start].isspace() and text[start:end].isspace()):
                name = text[start : start + 3]
                if not (_SEGMENT_NAME(name) and (end == start + 3 or text[start + 3] == field)):
                    name = _unreadable_name(text[start : min(end, start + _NAME_SHOWN)], field)
                    if unreadable is None:
                        unreadable = len(starts) + 1
                entry = entries.get(name)
                if entry is None:
                    entry = entries[name] = (name, array("q"))
                entry[1].append(len(starts))
                names.append(entry[0])
                starts.append(start)
                ends.append(end)
            start = end + 1
        self.starts, self.ends, self.names, self.unreadable = starts, ends, names, unreadable
        self.by_name = {name: positions for name, (_, positions) in entries.items()}
        self.made: dict[int, Segment] = {0: msh}


class _Segments(Sequence[Segment]):
    """A message's segments in order, each made when first read (see :class:`_Index`)."""

    def __init__(self, message: Message) -> None:
        self._message = message
        self._count = len(message._index().starts)

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> Segment: ...
    @overload
    def __getitem__(self, i: slice) -> list[Segment]: ...
    def __getitem__(self, i: int | slice) -> Segment | list[Segment]:
        if isinstance(i, slice):
            return [self._message._segment_at(n) for n in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("segment index out of range")
        return self._message._segment_at(i)


_SEGMENT_NAME = SEGMENT_NAME.fullmatch
_NAME_SHOWN = 8  # an unreadable line's name: enough to tell lines apart, never a long value


def _unreadable_name(start: str, field: str) -> str:
    """The name a line that is not a segment goes by: its start up to the field separator
    (``PIDX``, ``PV``, ``pid``), never a segment name, so no lookup by name finds it."""
    return start.split(field, 1)[0] or start


def _line_end(data: bytes) -> int:
    """Index of the first CR or LF (or the length): where the header segment ends."""
    ends = [i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0]
    return min(ends) if ends else len(data)


def _delimiters(header: str) -> Delimiters:
    """Delimiters from MSH-1 and MSH-2: 4 encoding characters, 5 with truncation (v2.7), or 3
    (component, repetition, subcomponent: no escape character, as Epic and older senders write)."""
    if len(header) < 8:
        raise MessageError("MSH is too short to declare its delimiters")
    field = header[3]
    end = header.find(field, 4)
    return _declared(field, header[4:] if end < 0 else header[4:end])


@lru_cache(maxsize=64)
def _declared(field: str, encoding: str) -> Delimiters:
    """Check and build one set of delimiters; a sender declares the same set in every message."""
    if len(encoding) not in (3, 4, 5):
        raise MessageError(f"MSH-2 must hold 3, 4 or 5 encoding characters, found {len(encoding)}")
    chars = field + encoding
    if len(set(chars)) != len(chars) or any(c.isalnum() or c in "\r\n" for c in chars):
        raise MessageError("MSH-1/MSH-2 delimiters must be distinct, non-alphanumeric characters")
    if len(encoding) == 3:
        component, repetition, subcomponent = encoding
        return Delimiters(field, component, repetition, None, subcomponent)
    component, repetition, escape, subcomponent = encoding[:4]
    truncation = encoding[4] if len(encoding) == 5 else None
    return Delimiters(field, component, repetition, escape, subcomponent, truncation)


def _first_charset(header: str, delimiters: Delimiters) -> str:
    """The first MSH-18 repetition (``""`` when empty), read from the latin-1 header line."""
    fields = header.split(delimiters.field)
    if len(fields) < 18:
        return ""
    return fields[17].split(delimiters.repetition)[0].strip()


def _decode(body: bytes, declared: str, default_charset: str) -> tuple[str, str, str | None]:
    """Decode with the declared charset, else the default, else latin-1 (which never fails).

    Returns the text, the codec used, and a description of what went wrong (or None).
    """
    default = codecs.lookup(default_charset).name
    problem = None
    if declared:
        codec = codec_for(declared)
        if codec is None:
            problem = f"MSH-18 character set '{printable(declared, 32)}' is not supported"
    else:
        codec = default
    candidates = [c for c in (codec, default, "iso8859-1") if c is not None]
    for candidate in dict.fromkeys(candidates):
        try:
            text = body.decode(candidate)
        except UnicodeDecodeError:
            failed = f"the bytes are not valid {candidate}"
            problem = f"{problem}; {failed}" if problem else failed
            continue
        if problem:
            problem += f"; decoded as {candidate}"
        return text, candidate, problem
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover
