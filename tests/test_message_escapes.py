"""engine.message.escapes: HL7 escape sequences in and out."""

from __future__ import annotations

import pytest

from engine.message import Delimiters, escape, unescape

HL7 = Delimiters()
ODD = Delimiters("#", "$", "*", "@", "!", "%")


def test_text_without_the_escape_character_is_returned_as_is():
    text = "plain text | with ^ delimiters"
    assert unescape(text, HL7) is text


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("\\E\\F\\E\\", "\\F\\"),  # no nesting: \E\ is an escape char, not a new sequence start
        ("one\\.br\\two", "one\ntwo"),
        ("one\\.sp 2\\two", "one\n\ntwo"),
        ("\\.ce\\centred", "\ncentred"),
        ("\\.ti 2\\indented", "  indented"),
        ("\\.fi\\\\.nf\\\\.in 4\\x", "x"),
        ("\\H\\bold\\N\\ normal", "bold normal"),
        ("\\X0D0A\\", "\r\n"),
    ],
)
def test_standard_sequences_are_expanded(escaped, plain):
    assert unescape(escaped, HL7) == plain


@pytest.mark.parametrize(
    "kept",
    ["\\Zlocal\\", "\\C2842\\", "\\M2442\\", "\\Q\\", "\\XZZ\\", "dangling \\ escape", "ends in \\.sp"],
)
def test_unknown_or_malformed_sequences_are_kept_verbatim(kept):
    assert unescape(kept, HL7) == kept


def test_hex_data_decodes_with_the_given_charset():
    assert unescape("Gr\\XC3BC\\\\XC39F\\e", HL7, "utf-8") == "Grüße"
    assert unescape("Gr\\XFC\\\\XDF\\e", HL7, "iso8859-1") == "Grüße"
    assert unescape("\\XFF\\", HL7, "utf-8") == "\ufffd"


def test_custom_delimiters_including_truncation():
    assert unescape("a@F@b@S@c@T@d@R@e@E@f@P@g", ODD) == "a#b$c!d*e@f%g"
    assert unescape("a\\F\\b", ODD) == "a\\F\\b"


def test_truncation_escape_is_unknown_without_a_truncation_character():
    assert unescape("\\P\\", HL7) == "\\P\\"


def test_escape_protects_every_delimiter_and_turns_newlines_into_breaks():
    assert escape("a|b^c&d~e\\f", HL7) == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    assert escape("line 1\r\nline 2\nline 3\rline 4", HL7) == (
        "line 1\\.br\\line 2\\.br\\line 3\\.br\\line 4"
    )
    assert escape("a#b%c@", ODD) == "a@F@b@P@c@E@"


@pytest.mark.parametrize("delimiters", [HL7, ODD])
@pytest.mark.parametrize("text", ["Müller | Sons", "a\\b^c&d~e#f$g*h@i!j%k", "multi\nline", ""])
def test_escape_then_unescape_round_trips(delimiters, text):
    escaped = escape(text, delimiters)
    for char in (delimiters.field, delimiters.component, delimiters.repetition, delimiters.subcomponent):
        assert char not in escaped
    assert unescape(escaped, delimiters) == text


def test_without_an_escape_character_nothing_is_unescaped_and_delimiters_written_become_spaces():
    none = Delimiters("|", "^", "~", None, "&")
    assert none.encoding_characters == "^~&"
    assert unescape("a\\F\\b", none) == "a\\F\\b"
    assert escape("a|b^c~d&e\nf", none) == "a b c d e f"


@pytest.mark.parametrize("sequence", [r"\.sp 200000000\ ", r"\.sk 99999999999\ ", r"\.ti 1000000\ "])
def test_a_spacing_count_is_bounded_whatever_the_sender_writes(sequence):
    assert len(unescape(sequence.strip(), HL7)) <= 100


@pytest.mark.parametrize("count", ["²", "١٢", "-3", "x"])
def test_a_spacing_count_that_is_not_ascii_digits_counts_one(count):
    assert unescape(rf"a\.sp {count}\b", HL7) == "a\nb"


def test_escaped_text_from_outside_holds_no_control_character():
    """A vendor's text must not carry MLLP's block bytes into a frame for the hospital."""
    forged = "hi\x1c\x0bMSH|^~\\&|EVIL\x1c\x00\x7f\tend"
    escaped = escape(forged, HL7)
    assert not any(ord(c) < 0x20 and c != "\t" or c == "\x7f" for c in escaped)
    assert escaped.startswith("hi  MSH\\F\\") and escaped.endswith("\tend")
