"""engine.message.batch: FHS/BHS/BTS/FTS batches and multi-message files."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import MessageError
from engine.message import Message, split_batch, split_file
from engine.message.batch import _segment_lines, canonical

MSG1 = "MSH|^~\\&|LAB|HOSP|COURIER|DEST|20240131||ORU^R01|M1|P|2.5\rPID|1||111\rOBX|1|NM|||5\r"
MSG2 = "MSH|^~\\&|LAB|HOSP|COURIER|DEST|20240131||MDM^T02|M2|P|2.5\rPID|1||222\r"
FILE = (
    "FHS|^~\\&|LAB|HOSP|COURIER|DEST|20240131||||F-77\r"
    "BHS|^~\\&|LAB|HOSP|COURIER|DEST|20240131||||B-5\r" + MSG1 + MSG2 + "BTS|2\rFTS|1\r"
)


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_file_batch_splits_into_messages_with_header_and_count(separator):
    batch = split_batch(FILE.replace("\r", separator).encode())
    assert batch is not None
    assert batch.messages == [MSG1.encode(), MSG2.encode()]
    assert batch.declared_count == 2
    assert batch.header.msh.name == "FHS"
    assert batch.header.msh.field(11) == "F-77"
    assert batch.header.msh.field(3) == "LAB"


def test_batch_without_fhs_uses_the_bhs_as_header():
    batch = split_batch(FILE.split("\r", 1)[1].encode())
    assert batch.header.msh.name == "BHS"
    assert batch.header.msh.field(11) == "B-5"
    assert [Message.parse(m).control_id for m in batch.messages] == ["M1", "M2"]


def test_header_keeps_its_own_delimiters():
    data = b"BHS#$*@!#LAB####20240131####B-9\rMSH|^~\\&|X|||||||M1|P|2.5\rBTS#1\r"
    batch = split_batch(data)
    assert batch.header.delimiters.field == "#"
    assert batch.header.msh.field(11) == "B-9"
    assert batch.declared_count == 1
    assert Message.parse(batch.messages[0]).delimiters.field == "|"


def test_counts_from_several_batches_are_summed_and_bad_counts_ignored():
    two = ("BHS|^~\\&\r" + MSG1 + "BTS|1\r") * 2
    assert split_batch(("FHS|^~\\&\r" + two + "FTS|2\r").encode()).declared_count == 2
    assert split_batch(("BHS|^~\\&\r" + MSG1 + "BTS|one\r").encode()).declared_count is None
    assert split_batch(("BHS|^~\\&\r" + MSG1).encode()).declared_count is None


def test_empty_batch_is_a_batch_with_no_messages():
    batch = split_batch(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r")
    assert batch.messages == []
    assert batch.declared_count == 0


def test_unreadable_header_still_yields_the_messages():
    batch = split_batch(("BHS\r" + MSG1 + "BTS|1\r").encode())
    assert batch.header is None
    assert batch.messages == [MSG1.encode()]


def test_plain_messages_are_not_batches():
    assert split_batch(MSG1.encode()) is None
    assert split_batch(b"") is None


def test_segment_before_any_msh_is_an_error():
    with pytest.raises(MessageError, match="precedes any MSH"):
        split_batch(b"BHS|^~\\&\rPID|1||111\r" + MSG1.encode())


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_split_file_drops_envelopes_and_tolerates_line_ends(separator):
    text = (FILE + "\r\r").replace("\r", separator)
    assert split_file(text.encode()) == [MSG1.encode(), MSG2.encode()]
    assert split_file((MSG1 + MSG2).replace("\r", separator).encode()) == [MSG1.encode(), MSG2.encode()]


def test_split_file_keeps_non_ascii_bytes_untouched():
    latin = ("MSH|^~\\&|||||||M1|P|2.5||||||8859/1\rPID|1||1||Noël\r").encode("latin-1")
    assert split_file(latin + latin) == [latin, latin]


def test_batch_lines_are_named_as_the_reader_names_segments():
    """``BTSX|`` is no trailer and ``MSHX|`` starts no message: they stay inside the message,
    whose reader then finds a line that is not a segment."""
    data = ("BHS|^~\\&|LAB\r" + MSG1 + "BTSX|9\rMSHX|1\r" + MSG2 + "BTS|2\r").encode()
    batch = split_batch(data)
    assert batch.declared_count == 2
    first, second = (Message.parse(m) for m in batch.messages)
    assert first.unreadable_segment == 4 and second.unreadable_segment is None
    assert split_batch(b"BHSX|^~\\&|LAB\r" + MSG1.encode()) is None, "BHSX is not a batch header"


def canonical_line_by_line(data: bytes) -> bytes:
    """canonical()'s definition, spelt out: every non-blank line, junk stripped, CR-ended."""
    return b"".join(line.rstrip(b" \t") + b"\r" for line in _segment_lines(data))


PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b"\x00", b"A", b"|", b"MSH|^~\\&|", b"PID|1"])


@given(st.lists(PIECES, max_size=14).map(b"".join))
def test_canonical_is_the_line_by_line_form_whatever_the_input(data):
    assert canonical(data) == canonical_line_by_line(data)


def test_canonical_returns_a_canonical_message_itself_not_a_copy():
    data = MSG1.encode()
    assert canonical(data) is data  # a 200 KB message is not copied three times to be hashed
    assert canonical(data[:-1]) == data
    assert canonical(b"  " + data.replace(b"\r", b" \r\n\r")) == data
