"""Property test of the input path, framer → reader → Source → ACK builder: whatever arrives,
no exception escapes, every readable MSH-10 comes back as the ACK's MSA-2, and the memory a
frame costs is bounded by a small multiple of its size.

Bounded in time (derandomized, no example database, a fixed number of examples) so CI is
stable; the inputs that found the bugs of issue 9 are kept as explicit examples.
"""

from __future__ import annotations

import itertools
import tracemalloc
from datetime import timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task

from engine.message import Message
from engine.message.batch import split_batch
from engine.mllp.framing import Frame, Framer
from engine.mllp.server import Reply
from engine.source import Accepted, Source
from engine.store.base import Receipt

MAX_FRAME = 1024 * 1024
MEMORY_PER_BYTE = 32  # peak bytes allocated per byte of frame...
MEMORY_FLOOR = 512 * 1024  # ...above what reading and answering any tiny frame takes


class MemoryStore:
    """The store's contract in memory: this property is about reading and answering, not SQLite
    (tests/test_source_input.py covers the same findings over sockets with a real store)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    def receive(self, incoming) -> defer.Deferred[Receipt]:
        return defer.succeed(Receipt(next(self._ids), False, incoming.ack_code))

    def receive_many(self, incoming) -> defer.Deferred[list[Receipt]]:
        return defer.succeed([Receipt(next(self._ids), False, m.ack_code) for m in incoming])


def read_like_a_mapping(message: Message) -> Accepted:
    """Accept, after reading what a mapping's dry-run reads: one field of one segment."""
    message.get("PID-3")
    return Accepted(("dest",))


def answer(source: Source, payload: bytes) -> Reply:
    """The source's reply to one frame, synchronously; an escaped exception fails the test."""
    outcome: list[object] = []
    source.handle_frame(payload, "fuzz:1").addBoth(outcome.append)
    assert len(outcome) == 1, "the in-memory path answers at once"
    (reply,) = outcome
    assert isinstance(reply, Reply), f"an exception escaped: {reply}"
    return reply


def check_frame(source: Source, payload: bytes) -> None:
    tracemalloc.start()
    try:
        reply = answer(source, payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_PER_BYTE * len(payload) + MEMORY_FLOOR, (
        f"{peak} bytes for a {len(payload)}-byte frame"
    )
    try:
        message = Message.parse(payload)
    except Exception:  # not readable: there is no MSH-10 to echo (answered with MSA-2 empty)
        return
    if split_batch(payload) is not None or message.message_type == "ACK" or reply.payload is None:
        return
    ack = Message.parse(reply.payload, default_charset=message.charset, force_charset=True)
    msa = ack.segment("MSA")
    assert msa is not None, "an ACK without MSA"
    assert msa.field(2) == message.msh.field(10), "MSA-2 is the readable MSH-10"


def run(data: bytes) -> None:
    source = Source("fuzz", MemoryStore(), task.Clock(), read_like_a_mapping)
    for event in Framer(MAX_FRAME).feed(data):
        if isinstance(event, Frame):
            check_frame(source, event.payload)


# -- HL7-shaped inputs ------------------------------------------------------------------------

SPECIAL = st.sampled_from(
    ["\\X0A\\", "\\X00\\", "\\F\\", "\\X\\", "\\", "\x00", "\x1b", "\u202e", "|", "^", "~"]
)
TEXT = st.lists(st.one_of(st.text(max_size=12), SPECIAL), max_size=4).map("".join)
NAMES = st.one_of(
    st.sampled_from(
        ["PID", "OBX", "NTE", "ZDS", "EVN", "MSH", "BHS", "FHS", "PIDX", "UNKNOWN", "PV", "pid", ""]
    ),
    st.text(max_size=5),
)
ENCODING = st.sampled_from(["^~\\&", "^~&", "^~\\&#", "$*@!", "^~\\", "^~\\&#!", ""])
CHARSET = st.one_of(
    st.sampled_from(
        ["", "UNICODE UTF-8", "8859/1", "ASCII", "\x00", "UTF\x00-8", "NOT-A-CHARSET", "ISO IR87"]
    ),
    st.text(max_size=8),
)
LINE_END = st.sampled_from(["\r", "\n", "\r\n", "\r\r"])


@st.composite
def hl7_frames(draw) -> bytes:
    fs = draw(st.sampled_from(["|", "|", "#", "^"]))
    header = [
        "MSH",
        draw(ENCODING),
        draw(TEXT),
        draw(TEXT),
        "COURIER",
        "",
        "20260101",
        "",
        draw(st.sampled_from(["ORU^R01", "ACK^R01", "ADT^A01", "", "ORU"])),
        draw(st.one_of(TEXT, st.just(""))),
        "P",
        draw(st.sampled_from(["2.5", "2.3", "2.8", "x"])),
        "",
        "",
        draw(st.sampled_from(["", "AL", "NE", "ER"])),
        draw(st.sampled_from(["", "AL"])),
        "",
        draw(CHARSET),
    ]
    header = header[: draw(st.integers(min_value=2, max_value=len(header)))]
    lines = [header[0] + fs + fs.join(header[1:])]
    for name, fields in draw(st.lists(st.tuples(NAMES, st.lists(TEXT, max_size=4)), max_size=6)):
        lines.append(fs.join([name, *fields]))
    end = draw(LINE_END)
    text = (
        draw(st.sampled_from(["", " ", "\r\n", "\x00"])) + end.join(lines) + draw(st.sampled_from(["", end]))
    )
    data = text.encode(draw(st.sampled_from(["utf-8", "latin-1"])), errors="replace")
    if draw(st.booleans()):
        position = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:position] + draw(st.binary(max_size=8)) + data[position:]
    return b"\x0b" + data + b"\x1c\r"


FAST = settings(
    max_examples=250,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def framed(text: bytes) -> bytes:
    return b"\x0b" + text + b"\x1c\r"


MSH = b"MSH|^~\\&|LAB|HOSP|COURIER|NHS|20260101||ORU^R01|"
TAIL = b"|P|2.5\rPID|1||42\r"


@FAST
@given(hl7_frames())
@example(framed(MSH + b"NUL1|P|2.5||||||\x00\rPID|1||42\r"))  # NUL in MSH-18 raised in codecs.lookup
@example(framed(MSH + b"LF\\X0A\\ID" + TAIL))  # MSH-10 decoding to a line feed
@example(framed(MSH + TAIL))  # empty MSH-10
@example(framed(MSH + b"SEG1" + TAIL + b"PIDX|1||99\rPV|1\rUNKNOWN|\r"))  # PIDX read as PID
@example(framed(b"MSH|^~&|LAB|HOSP|COURIER|NHS|20260101||ORU^R01|EPIC1" + TAIL))  # three encoding chars
@example(framed(MSH + b"TWO1" + TAIL + MSH + b"TWO2" + TAIL))  # two MSH, no batch header
@example(framed((MSH + b"LF1" + TAIL).replace(b"\r", b"\n")))  # LF segment ends
@example(framed(MSH + b"MANY" + TAIL + b"PID\r" * 50_000))  # many tiny segments: memory per frame
@example(framed(MSH + b"HAT" + TAIL + b"NTE|1||" + b"^" * 200_000 + b"\r"))  # one huge field
def test_every_hl7_shaped_frame_is_answered_with_its_msh10(data: bytes) -> None:
    run(data)


ANY_BYTES = st.binary(max_size=512)


@FAST
@given(st.one_of(ANY_BYTES, ANY_BYTES.map(framed), ANY_BYTES.map(lambda tail: framed(MSH + tail))))
@example(b"\x0b\x1c\r")
@example(b"\x0bMSH|\x1c\r")
@example(b"\x0bMSH\x1c\r\x0b\x0bMSH|^~\\&\x1c")
def test_any_bytes_are_answered_or_discarded_never_raised(data: bytes) -> None:
    run(data)
