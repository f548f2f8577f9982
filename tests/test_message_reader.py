"""engine.message.reader: delimiters, line ends, character sets, segment and field access."""

from __future__ import annotations

import hl7
import pytest

from engine.errors import MessageError
from engine.message import Delimiters, Message

ORU = (
    "MSH|^~\\&|LAB^2.16.840.1.113883.3.1^ISO|HOSP|COURIER|DEST|20240131142501+0100||ORU^R01^ORU_R01"
    "|CTL-0001|P^T|2.5.1^NLD|||AL|NE||UNICODE UTF-8\r"
    "PID|1||12345^^^HOSP^MR~9434765919^^^NHS^NH||Müller^Jörg^^^Dr.||19700101|M\r"
    "OBR|1|PL1|FL1|24331-1^Lipid panel^LN\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||196|mg/dL|<200||||F\r"
    "NTE|1||Fasting \\T\\ resting\r"
    "OBX|2|TX|TEXT^Comment^L||line one\\.br\\line two||||||F\r"
    "OBX|3|ED|PDF^Report^L||^AP^PDF^Base64^JVBERi0xLjQ=||||||F\r"
    "ZDS|1.2.3.4.5^Courier^Application^DICOM\r"
)


def parse(text: str, **kwargs) -> Message:
    return Message.parse(text.encode("utf-8"), **kwargs)


def test_msh_shortcuts_read_the_header():
    message = parse(ORU)
    assert message.control_id == "CTL-0001"
    assert (message.message_type, message.trigger_event, message.message_structure) == (
        "ORU",
        "R01",
        "ORU_R01",
    )
    assert message.processing_id == "P"
    assert message.version == "2.5.1"
    assert message.sending_application == "LAB"
    assert message.sending_facility == "HOSP"
    assert message.receiving_application == "COURIER"
    assert message.receiving_facility == "DEST"
    assert message.accept_ack_type == "AL"
    assert message.application_ack_type == "NE"
    assert message.character_sets == ("UNICODE UTF-8",)


def test_absent_msh_fields_read_as_empty_strings():
    message = parse("MSH|^~\\&|LAB\rPID|1\r")
    assert message.control_id == ""
    assert message.trigger_event == ""
    assert message.character_sets == ()
    assert message.charset == "ascii"


def test_msh_field_numbering_counts_the_field_separator_as_msh_1():
    msh = parse(ORU).msh
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.field(3) == "LAB^2.16.840.1.113883.3.1^ISO"
    assert msh.field(10) == "CTL-0001"
    assert msh.value(2) == "^~\\&"  # never split or unescaped
    assert msh.repetitions(2) == ["^~\\&"]
    assert len(msh) == 18


def test_other_segments_number_fields_after_the_name():
    pid = parse(ORU).segment("PID")
    assert pid.field(1) == "1"
    assert pid.field(3) == "12345^^^HOSP^MR~9434765919^^^NHS^NH"
    assert pid.field(99) == ""
    assert len(pid) == 8
    with pytest.raises(ValueError):
        pid.field(0)


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_cr_lf_and_crlf_segment_separators_are_all_accepted(separator):
    message = parse(ORU.replace("\r", separator))
    assert "\n" not in message.text
    assert [s.name for s in message.segments] == ["MSH", "PID", "OBR", "OBX", "NTE", "OBX", "OBX", "ZDS"]
    assert message.get("OBX[3]-5.5") == "JVBERi0xLjQ="


def test_leading_whitespace_and_nuls_are_skipped_and_blank_lines_ignored():
    message = Message.parse(b"\x00\r\n  MSH|^~\\&|LAB|||||||X1\r\r\nPID|1\r\n\r\n")
    assert message.control_id == "X1"
    assert [s.name for s in message.segments] == ["MSH", "PID"]
    assert message.raw.startswith(b"\x00")


def test_segments_end_at_their_own_separator_whatever_their_length():
    text = "MSH|^~\\&|LAB|||||||X1\rZ\r \t \rZB\rZZZ|1\rOBX|1|ED|PDF^Report^L||^AP^PDF^Base64^" + "A" * 70000
    message = Message.parse(text.encode("ascii") + b"\rNTE|1||last")
    assert [(s.name, s.index, s.occurrence) for s in message.segments] == [
        ("MSH", 0, 1),
        ("Z", 1, 1),
        ("ZB", 2, 1),
        ("ZZZ", 3, 1),
        ("OBX", 4, 1),
        ("NTE", 5, 1),
    ]
    assert len(message.segment("Z")) == 0 and len(message.segment("ZB")) == 0
    assert message.get("ZZZ-1") == "1"
    assert message.get("OBX-5.5") == "A" * 70000
    assert message.get("NTE-3") == "last"
    assert message.msh.field(10) == "X1"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" \r\n\x00",
        b"PID|1||123\rMSH|^~\\&|",
        b"MSH|^~\\",
        b"MSH|^~\\&&|",
        b"MSH|^~\\&#XY|A",
        b"MSH|^^\\&|A",
        b"MSHA^~\\&|A",
        b"\x0bMSH|^~\\&|A",
    ],
)
def test_content_without_a_readable_msh_raises_message_error(data):
    with pytest.raises(MessageError):
        Message.parse(data)


def test_custom_delimiters_are_honoured_everywhere():
    text = "MSH#$*@!#LAB$X#HOSP##########2.5\rPID#1##A$B$C$D!sub1!sub2*R2$X#\rNTE#1##a@F@b@S@c\r"
    message = parse(text)
    assert message.delimiters == Delimiters("#", "$", "*", "@", "!")
    assert message.delimiters.encoding_characters == "$*@!"
    assert message.sending_application == "LAB"
    assert message.msh.field(1) == "#"
    assert message.get("PID-3.4") == "D!sub1!sub2"
    assert message.get("PID-3.4.1") == "D"
    assert message.get("PID-3.4.2") == "sub1"
    assert message.get("PID-3[2].2") == "X"
    assert message.segment("PID").repetitions(3) == ["A$B$C$D!sub1!sub2", "R2$X"]
    assert message.get("NTE-3") == "a#b$c"


def test_fifth_encoding_character_is_the_truncation_character():
    message = parse("MSH|^~\\&#|LAB|||||||||2.7\rNTE|1||cut\\P\\here\r")
    assert message.delimiters.truncation == "#"
    assert message.delimiters.encoding_characters == "^~\\&#"
    assert message.msh.field(2) == "^~\\&#"
    assert message.sending_application == "LAB"
    assert message.get("NTE-3") == "cut#here"


def test_segment_occurrence_repetition_component_and_subcomponent_access():
    message = parse(ORU)
    assert [s.occurrence for s in message.all("OBX")] == [1, 2, 3]
    assert [s.index for s in message.all("OBX")] == [3, 5, 6]
    assert message.segment("OBX", 2).field(2) == "TX"
    assert message.segment("OBX", 4) is None
    assert message.segment("ZZZ") is None
    assert message.all("ZZZ") == []
    assert message.get("PID-3") == "12345^^^HOSP^MR"
    assert message.get("PID-3[2].1") == "9434765919"
    assert message.get("PID-3[2].4") == "NHS"
    assert message.get("PID-3[3].1") == ""
    assert message.get("PID-5.2") == "Jörg"
    assert message.get("OBR-4.2") == "Lipid panel"
    assert message.get("ZDS-1.1") == "1.2.3.4.5"
    assert message.get("MSH-3.2.1") == "2.16.840.1.113883.3.1"
    assert message.get("PID-3.4.2") == ""


def test_get_unescapes_and_falls_back_to_the_default():
    message = parse(ORU)
    assert message.get("NTE-3") == "Fasting & resting"
    assert message.get("OBX[2]-5") == "line one\nline two"
    assert message.get("PV1-2", default="none") == "none"
    assert message.get("PID-7.2", default="?") == "?"


def test_segments_are_built_once_and_keep_msh_identity():
    message = parse(ORU)
    assert all(a is b for a, b in zip(message.segments, message.segments, strict=True))
    assert message.segments[0] is message.msh
    assert message.segments[1] is message.segment("PID") and message.segments[-1] is message.segment("ZDS")
    assert (
        [s.occurrence for s in message.all("OBX")]
        == [1, 2, 3]
        == [s.occurrence for s in message.segments if s.name == "OBX"]
    )


def test_repr_shows_no_patient_data():
    message = parse(ORU)
    assert "Müller" not in repr(message) and "12345" not in repr(message)
    assert "CTL-0001" in repr(message)
    assert "Müller" not in repr(message.segment("PID"))


class TestCharacterSets:
    LATIN1 = "MSH|^~\\&|LAB|||||||X1|P|2.5||||||{msh18}\rPID|1||1||Gérard^Noël\r"

    def test_utf8_declared_with_the_hl7_name(self):
        message = Message.parse(self.LATIN1.format(msh18="UNICODE UTF-8").encode("utf-8"))
        assert message.charset == "utf-8"
        assert message.charset_problem is None
        assert message.get("PID-5.2") == "Noël"

    def test_iso_8859_1_declared_with_the_hl7_name_or_the_iana_name(self):
        for name in ("8859/1", "ISO-8859-1"):
            message = Message.parse(self.LATIN1.format(msh18=name).encode("latin-1"))
            assert message.charset == "iso8859-1"
            assert message.charset_problem is None
            assert message.get("PID-5.1") == "Gérard"

    def test_empty_msh_18_uses_the_default_charset(self):
        data = self.LATIN1.format(msh18="").encode("utf-8")
        message = Message.parse(data, default_charset="utf-8")
        assert message.charset == "utf-8"
        assert message.get("PID-5.2") == "Noël"

    def test_lying_sender_is_overridden_with_force_charset(self):
        data = self.LATIN1.format(msh18="8859/1").encode("utf-8")
        honest = Message.parse(data)  # latin-1 decodes anything, so this silently garbles
        assert honest.get("PID-5.2") == "NoÃ«l"
        forced = Message.parse(data, default_charset="utf-8", force_charset=True)
        assert forced.charset == "utf-8"
        assert forced.get("PID-5.2") == "Noël"
        assert forced.character_sets == ("8859/1",)

    def test_undecodable_bytes_fall_back_and_say_so(self):
        data = self.LATIN1.format(msh18="UNICODE UTF-8").encode("latin-1")
        message = Message.parse(data, default_charset="utf-8")
        assert message.charset == "iso8859-1"
        assert "utf-8" in message.charset_problem
        assert message.get("PID-5.2") == "Noël"

    def test_ascii_default_with_eight_bit_bytes_falls_back_to_latin1(self):
        message = Message.parse(self.LATIN1.format(msh18="").encode("latin-1"))
        assert message.charset == "iso8859-1"
        assert "ascii" in message.charset_problem

    def test_unknown_or_not_ascii_compatible_charsets_are_reported(self):
        for name in ("KLINGON", "UNICODE UTF-16"):
            message = Message.parse(self.LATIN1.format(msh18=name).encode("utf-8"), default_charset="utf-8")
            assert message.charset == "utf-8"
            assert name in message.charset_problem
            assert message.get("PID-5.2") == "Noël"

    def test_hex_escapes_decode_with_the_message_charset(self):
        cases = (("UNICODE UTF-8", "No\\XC3AB\\l", "utf-8"), ("8859/1", "No\\XEB\\l", "latin-1"))
        for msh18, escaped, codec in cases:
            text = self.LATIN1.format(msh18=msh18).replace("Noël", escaped)
            assert Message.parse(text.encode(codec)).get("PID-5.2") == "Noël"

    def test_repeated_msh_18_lists_every_character_set(self):
        message = Message.parse(self.LATIN1.format(msh18="8859/1~ISO IR87").encode("latin-1"))
        assert message.character_sets == ("8859/1", "ISO IR87")
        assert message.charset == "iso8859-1"


def test_raw_fields_and_repetitions_agree_with_python_hl7():
    ours = parse(ORU)
    theirs = hl7.parse(ORU)
    assert len(ours.segments) == len(theirs)
    for mine, other in zip(ours.segments, theirs, strict=True):
        assert mine.name == str(other[0])
        assert len(mine) == len(other) - 1
        for n in range(1, len(other)):
            assert mine.field(n) == str(other[n]), f"{mine.name}-{n}"
            if n > 2 or mine.name != "MSH":
                assert mine.repetitions(n) == ([str(r) for r in other[n]] if str(other[n]) else [])


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("PIDX|1|X", "PIDX"),
        ("UNKNOWN|", "UNKNOWN"),
        ("PV|1|I", "PV"),
        ("pid|1", "pid"),
        ("AB1DEFGHIJ", "AB1DEFGH"),
    ],
)
def test_a_segment_name_is_exactly_three_characters_followed_by_the_field_separator(line, name):
    message = parse(f"MSH|^~\\&|A|B|C|D|||ADT^A01|X1|P|2.5\r{line}\rPID|2\rEVN\r")
    assert [s.name for s in message.segments] == ["MSH", name, "PID", "EVN"]
    assert message.unreadable_segment == 2
    assert message.segment("PID").field(1) == "2", "PIDX| is not read as a PID"


def test_a_message_of_readable_segments_has_no_unreadable_one_and_no_second_header():
    message = parse(ORU)
    assert message.unreadable_segment is None and message.second_header is None


def test_a_second_msh_is_found_by_its_position():
    message = parse("MSH|^~\\&|A|B|C|D|||ADT^A01|X1|P|2.5\rPID|1\rMSH|^~\\&|A|B|C|D|||ADT^A01|X2|P|2.5\r")
    assert message.second_header == 3


@pytest.mark.parametrize("name", ["hex", "base64", "zlib", "rot13", "uu"])
def test_an_msh18_naming_a_codec_that_is_not_a_charset_is_read_with_the_default(name):
    message = Message.parse(f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|X1|P|2.5||||||{name}\rPID|1\r".encode())
    assert message.control_id == "X1" and message.charset_problem


def test_a_segment_without_fields_is_present_and_reading_segments_splits_none() -> None:
    message = parse("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.5\rZDS\rOBX|1|TX|c||one\rOBX|2|TX|c||two\r")
    (zds,) = message.all("ZDS")
    assert zds and message.segment("ZDS") is zds  # present, though it has no fields
    for segment in message.all("OBX"):
        assert segment._fields is None  # found, not split: only reading a field splits it
    assert message.all("OBX")[1].value(5) == "two"
