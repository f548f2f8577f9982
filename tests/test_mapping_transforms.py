"""Transforms, validators and HL7 date handling: good values pass, bad ones carry the right code."""

from __future__ import annotations

import base64
import uuid

import pytest

from engine.mapping.checks import nhs_number_problem, sctid_problem, verhoeff_valid
from engine.mapping.dates import DateError, format_dtm, needed_precision, parse_dtm
from engine.mapping.transforms import TRANSFORMS, TransformError, compile_transform

LOOKUPS = {"priority": {"S": "urgent", "R": "fyi"}}


def run(entry, value):
    return compile_transform(entry, LOOKUPS).apply(value)


@pytest.mark.parametrize("number", ["9434765919", "9903002157", "9547852140"])
def test_nhs_numbers_with_a_correct_check_digit_pass(number):
    assert nhs_number_problem(number) is None


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("9434765918", "check digit is wrong"),
        ("943476591", "exactly 10 digits"),
        ("94347659190", "exactly 10 digits"),
        ("943476591X", "exactly 10 digits"),
        ("1000000010", "check digit of 10"),  # weighted sum 10 → remainder 10 → never issued
    ],
)
def test_nhs_numbers_that_fail_say_why(number, reason):
    assert reason in nhs_number_problem(number)


@pytest.mark.parametrize(
    "code",
    ["407554009", "407555005", "248223005", "22298006", "441000000100"],  # last: long form
)
def test_snomed_ids_pass_verhoeff_and_partition(code):
    assert sctid_problem(code) is None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("407554008", "check digit"),
        ("12345", "6 to 18 digits"),
        ("0407554009", "leading zero"),
        ("407554039", "partition"),  # partition 03 is reserved
        ("40755400A", "6 to 18 digits"),
    ],
)
def test_bad_snomed_ids_say_why(code, reason):
    assert reason in sctid_problem(code)


def test_verhoeff_catches_a_transposition():
    assert verhoeff_valid("407554009")
    assert not verhoeff_valid("470554009")


@pytest.mark.parametrize(
    ("text", "precision"),
    [
        ("2024", "year"),
        ("202403", "month"),
        ("20240315", "day"),
        ("2024031512", "hour"),
        ("202403151230", "minute"),
        ("20240315123045", "second"),
        ("20240315123045.1", "fraction"),
        ("20240315123045.1234", "fraction"),
    ],
)
def test_every_dtm_precision_parses(text, precision):
    assert parse_dtm(text).precision == precision
    assert parse_dtm(text + "+0100").has_offset


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("2024", "%Y", "2024"),
        ("202403", "%m/%Y", "03/2024"),
        ("19800101", "%Y-%m-%d", "1980-01-01"),
        ("19800101", "%Y%m%d", "19800101"),
        ("2024031512", "%d.%m.%Y %H", "15.03.2024 12"),
        ("202403151230-0500", "%H:%M %z", "12:30 -0500"),
        ("20240315123045.25", "%S.%f", "45.250000"),
        ("2024", "rfc3339", "2024-01-01T00:00:00Z"),
        ("20240315", "rfc3339", "2024-03-15T00:00:00Z"),
        ("202403151230", "rfc3339", "2024-03-15T12:30:00Z"),
        ("20240315123045", "rfc3339", "2024-03-15T12:30:45Z"),
        ("20240315123045.1234", "rfc3339", "2024-03-15T12:30:45.1234Z"),
        ("20240315123045+0100", "rfc3339", "2024-03-15T12:30:45+01:00"),
        ("20240315123045.5-0330", "rfc3339", "2024-03-15T12:30:45.5-03:30"),
        ("20240315123045+0000", "rfc3339", "2024-03-15T12:30:45Z"),
    ],
)
def test_dates_format(text, fmt, expected):
    assert format_dtm(text, fmt) == expected


def test_rfc3339_uses_the_assumed_offset_only_when_the_value_has_none():
    assert format_dtm("202403151230", "rfc3339", assume_offset="+0100") == "2024-03-15T12:30:00+01:00"
    assert format_dtm("202403151230-0500", "rfc3339", assume_offset="+0100") == "2024-03-15T12:30:00-05:00"


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("198001", "%Y-%m-%d"),  # no day: refuse rather than invent one
        ("20240315", "%H:%M"),
        ("2024-03-15", "%Y"),
        ("20241315", "%Y"),  # month 13
        ("20240315+2500", "rfc3339"),
        ("", "%Y"),
    ],
)
def test_bad_or_too_coarse_dates_are_refused(text, fmt):
    with pytest.raises(DateError):
        format_dtm(text, fmt)


def test_needed_precision_reads_the_finest_directive():
    assert needed_precision("%Y") == "year"
    assert needed_precision("%d %b %Y") == "day"
    assert needed_precision("%Y-%m-%dT%H:%M:%S") == "second"
    assert needed_precision("%%d %Y") == "year"


@pytest.mark.parametrize(
    ("entry", "value", "expected"),
    [
        ("strip", "  a b ", "a b"),
        ("upper", "abc", "ABC"),
        ("lower", "ABC", "abc"),
        ("digits_only", "943 476-5919", "9434765919"),
        ({"date": "%Y-%m-%d"}, "19800101", "1980-01-01"),
        ({"date": "rfc3339", "assume_offset": "-0500"}, "202401011200", "2024-01-01T12:00:00-05:00"),
        ({"lookup": "priority"}, "S", "urgent"),
        ({"lookup": "priority", "default": "asap"}, "Q", "asap"),
        ("base64_check", "SGVs\r\nbG8=", "SGVsbG8="),
        ({"max_len": 3}, "abcdef", "abc"),
        ({"max_len": 10}, "abc", "abc"),
        ({"join": ", "}, ["a", "", "b"], "a, b"),
        ("number", "140", 140),
        ("number", "-0.25", -0.25),
        ("nhs_number", "9434765919", "9434765919"),
        ("snomed_id", "407554009", "407554009"),
    ],
)
def test_transforms_produce_their_value(entry, value, expected):
    assert run(entry, value) == expected


def test_uuid5_is_deterministic_and_namespaced():
    first = run({"uuid5": "url"}, "chan/LIS/LAB/MSG1")
    assert first == str(uuid.uuid5(uuid.NAMESPACE_URL, "chan/LIS/LAB/MSG1"))
    assert run({"uuid5": "url"}, "chan/LIS/LAB/MSG2") != first
    own = "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
    assert run({"uuid5": own}, "x") == str(uuid.uuid5(uuid.UUID(own), "x"))


@pytest.mark.parametrize(
    ("entry", "value", "code"),
    [
        ({"lookup": "priority"}, "Q", 103),
        ("base64_check", "not base64!", 102),
        ("number", "12a", 102),
        ("nhs_number", "9434765918", 102),
        ("snomed_id", "407554008", 102),
        ({"date": "%Y-%m-%d"}, "2024", 102),
    ],
)
def test_failing_transforms_carry_the_hl7_error_code_and_no_value(entry, value, code):
    with pytest.raises(TransformError) as caught:
        run(entry, value)
    assert caught.value.code == code
    assert value not in caught.value.reason


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("uper", "unknown transform 'uper' (did you mean 'upper'?)"),
        ({"date": 5}, "strftime format"),
        ("date", "needs an argument"),
        ({"upper": True}, "takes no argument"),
        ({"lookup": "priorty"}, "unknown lookup 'priorty' (did you mean 'priority'?)"),
        ({"lookup": "priority", "fallback": "x"}, "no option 'fallback'"),
        ({"max_len": 0}, "positive whole number"),
        ({"uuid5": "nope"}, "namespace"),
        ({"date": "rfc3339", "assume_offset": "UTC"}, "+0000"),
        (7, "a transform is a name"),
    ],
)
def test_bad_transform_entries_are_refused_at_load_time(entry, message):
    with pytest.raises(ValueError) as caught:
        compile_transform(entry, LOOKUPS)
    assert message in str(caught.value)


def test_every_declared_transform_can_be_compiled():
    examples = {"date": "%Y", "lookup": "priority", "max_len": 5, "join": ",", "uuid5": "dns"}
    for name, spec in TRANSFORMS.items():
        entry = {name: examples[name]} if spec.argument else name
        assert compile_transform(entry, LOOKUPS).name == name
    assert base64.b64decode(run("base64_check", "SGVsbG8=")) == b"Hello"
