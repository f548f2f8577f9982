"""MLLP release 1 framing: ``<VT> payload <FS><CR>``, with every way a peer gets it wrong.

The :class:`Framer` is pure (no I/O, no Twisted) so the rules are easy to read and test:

- several frames in one read, and one frame split over many reads;
- bytes outside a frame are discarded and *reported* (never silently);
- a frame whose trailing CR is missing is still accepted, and reported;
- a start byte inside an unfinished frame means the earlier frame is broken: it is
  reported and discarded and the new frame is read (peers that ACK the broken frame's
  control id for the next message are exactly what we must not imitate);
- a frame larger than the limit is reported before more of it is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D

_START = bytes([START_BLOCK])
_END = bytes([END_BLOCK])


def frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP block; one holding a block byte would split into frames the
    receiver never meant, so it is refused (a bug upstream: text from outside is escaped)."""
    if b"\x0b" in payload or b"\x1c" in payload:
        raise ValueError("an MLLP payload cannot hold the block bytes 0x0B or 0x1C")
    return b"\x0b" + payload + b"\x1c\r"


@dataclass(frozen=True)
class Frame:
    """A complete frame's payload."""

    payload: bytes


@dataclass(frozen=True)
class Junk:
    """Bytes that arrived outside any frame and were discarded."""

    count: int


@dataclass(frozen=True)
class MissingCarriageReturn:
    """The previous frame ended with ``<FS>`` but no ``<CR>``; it was accepted anyway."""


@dataclass(frozen=True)
class BrokenFrame:
    """A start byte arrived inside an unfinished frame; the unfinished part was discarded."""

    discarded: int


@dataclass(frozen=True)
class Oversize:
    """A frame grew beyond the limit; the framer stops and the connection should close."""

    head: bytes
    """The first bytes of the refused frame, enough to read its MSH for a NAK."""


Event = Frame | Junk | MissingCarriageReturn | BrokenFrame | Oversize

_HEAD_BYTES = 4096


class Framer:
    """Turn a byte stream into MLLP frames and protocol-violation events."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        # An unfinished frame is kept as the reads it arrived in and joined once at its end:
        # growing one buffer read by read copies a 200 KB frame several times over.
        self._parts: list[bytes] = []
        self._buffered = 0
        self._in_frame = False
        self._expect_cr = False
        self._failed = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not yet ended (for the frame timeout)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished frame held so far."""
        return self._buffered

    def feed(self, data: bytes) -> list[Event]:
        """Consume ``data`` and return what it completed, in stream order."""
        if self._failed:
            return []
        events: list[Event] = []
        position, size = 0, len(data)
        while position < size:
            if self._expect_cr:
                self._expect_cr = False
                if data[position] == CARRIAGE_RETURN:
                    position += 1
                    continue
                events.append(MissingCarriageReturn())
            if not self._in_frame:
                start = data.find(_START, position)
                if start == -1:
                    events.append(Junk(size - position))
                    break
                if start > position:
                    events.append(Junk(start - position))
                self._in_frame = True
                position = start + 1
                continue
            end = data.find(_END, position)
            restart = data.find(_START, position, size if end == -1 else end)
            if restart != -1:
                events.append(BrokenFrame(self._buffered + restart - position))
                self._drop()
                position = restart + 1
                continue
            stop = size if end == -1 else end
            if self._buffered + stop - position > self.max_frame_bytes:
                head = b"".join([*self._parts, data[position : position + _HEAD_BYTES]])[:_HEAD_BYTES]
                events.append(Oversize(head))
                self._drop()
                self._in_frame = False
                self._failed = True
                break
            if end == -1:
                self._parts.append(data[position:])
                self._buffered += size - position
                break
            if self._parts:
                self._parts.append(data[position:end])
                payload = b"".join(self._parts)
                self._drop()
            else:
                payload = data[position:end]
            events.append(Frame(payload))
            self._in_frame = False
            position = end + 1
            if position < size:
                if data[position] == CARRIAGE_RETURN:
                    position += 1
                else:
                    events.append(MissingCarriageReturn())
            else:
                self._expect_cr = True
        return events

    def _drop(self) -> None:
        self._parts.clear()
        self._buffered = 0
