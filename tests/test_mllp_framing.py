"""The framing rules, byte by byte."""

from engine.mllp.framing import (
    BrokenFrame,
    Frame,
    Framer,
    Junk,
    MissingCarriageReturn,
    Oversize,
    frame,
)

MSG = b"MSH|^~\\&|LAB|HOSP|||20260101||ORU^R01|1|P|2.5\rPID|1\r"


def feed_all(framer: Framer, *chunks: bytes) -> list:
    events = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events


def test_one_frame() -> None:
    assert Framer(1000).feed(frame(MSG)) == [Frame(MSG)]


def test_several_frames_in_one_read() -> None:
    events = Framer(1000).feed(frame(MSG) + frame(b"MSH|2") + frame(b"MSH|3"))
    assert events == [Frame(MSG), Frame(b"MSH|2"), Frame(b"MSH|3")]


def test_one_frame_split_over_many_reads() -> None:
    data = frame(MSG)
    framer = Framer(1000)
    events = feed_all(framer, *[data[i : i + 1] for i in range(len(data))])
    assert events == [Frame(MSG)]
    assert not framer.in_frame


def test_junk_before_start_is_reported_with_its_size_and_the_frame_still_read() -> None:
    events = Framer(1000).feed(b"hello" + frame(MSG))
    assert events == [Junk(5), Frame(MSG)]


def test_junk_between_frames_and_trailing_lf() -> None:
    events = Framer(1000).feed(frame(MSG) + b"\n\x00\x00" + frame(MSG))
    assert events == [Frame(MSG), Junk(3), Frame(MSG)]


def test_missing_trailing_cr_is_accepted_and_reported() -> None:
    events = Framer(1000).feed(b"\x0b" + MSG + b"\x1c" + frame(b"MSH|2"))
    assert events == [Frame(MSG), MissingCarriageReturn(), Frame(b"MSH|2")]


def test_trailing_cr_arriving_in_the_next_read_is_not_junk() -> None:
    framer = Framer(1000)
    assert framer.feed(b"\x0b" + MSG + b"\x1c") == [Frame(MSG)]
    assert framer.feed(b"\r") == []
    assert framer.feed(frame(b"MSH|2")) == [Frame(b"MSH|2")]


def test_start_byte_inside_unfinished_frame_discards_the_broken_one() -> None:
    events = Framer(1000).feed(b"\x0bMSH|broken" + frame(MSG))
    assert events == [BrokenFrame(len(b"MSH|broken")), Frame(MSG)]


def test_start_byte_inside_unfinished_frame_across_reads() -> None:
    framer = Framer(1000)
    assert framer.feed(b"\x0bMSH|bro") == []
    assert framer.feed(b"ken" + frame(MSG)) == [BrokenFrame(10), Frame(MSG)]


def test_oversize_frame_is_refused_before_buffering_more() -> None:
    framer = Framer(100)
    events = framer.feed(b"\x0b" + MSG + b"X" * 200)
    assert len(events) == 1 and isinstance(events[0], Oversize)
    assert events[0].head.startswith(b"MSH|")
    assert framer.buffered == 0
    assert framer.feed(frame(MSG)) == [], "a refused stream is not read further"


def test_oversize_detected_across_reads() -> None:
    framer = Framer(100)
    assert framer.feed(b"\x0b" + b"A" * 60) == []
    events = framer.feed(b"B" * 60)
    assert isinstance(events[0], Oversize)
    assert events[0].head == b"A" * 60 + b"B" * 60


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    payload = b"M" * 100
    assert Framer(100).feed(frame(payload)) == [Frame(payload)]


def test_in_frame_tracks_unfinished_frames() -> None:
    framer = Framer(1000)
    framer.feed(b"\x0bMSH")
    assert framer.in_frame and framer.buffered == 3
    framer.feed(b"|\x1c\r")
    assert not framer.in_frame


def test_a_large_frame_over_several_reads_keeps_every_byte_in_order() -> None:
    payload = MSG + bytes(range(32, 127)) * 3000
    data = frame(payload)
    framer = Framer(1 << 20)
    for start in range(0, len(data) - 2, 65536):
        assert framer.feed(data[start : min(start + 65536, len(data) - 2)]) == []
        assert framer.buffered == min(start + 65536, len(data) - 2) - 1  # all but the start byte
    assert framer.feed(b"\x1c\r" + frame(MSG)) == [Frame(payload), Frame(MSG)]
    assert framer.buffered == 0


def test_oversize_head_is_the_first_4096_bytes_across_reads() -> None:
    framer = Framer(10_000)
    assert framer.feed(b"\x0b" + b"A" * 3000) == []
    events = framer.feed(b"B" * 3000) + framer.feed(b"C" * 5000)
    assert events == [Oversize(b"A" * 3000 + b"B" * 1096)]


def test_a_payload_holding_a_block_byte_is_never_framed():
    """It would reach the receiver as two frames, the second one written by whoever wrote the text."""
    for payload in (b"MSH|^~\\&|A\x1c\x0bMSH|^~\\&|EVIL", b"MSH|\x0b"):
        try:
            frame(payload)
        except ValueError:
            continue
        raise AssertionError(f"{payload!r} was framed")
