"""engine.message.path: the HL7 path grammar, its errors, canonical text and ERL."""

from __future__ import annotations

import pytest

from engine.errors import PathError
from engine.message import Delimiters, Path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PID-5.2", Path("PID", None, 5, None, 2, None)),
        ("PID-3[2].1", Path("PID", None, 3, 2, 1, None)),
        ("OBX[2]-5.5", Path("OBX", 2, 5, None, 5, None)),
        ("PID-3.4.1", Path("PID", None, 3, None, 4, 1)),
        ("MSH-9", Path("MSH", None, 9, None, None, None)),
        ("ZDS-1", Path("ZDS", None, 1, None, None, None)),
        ("PV1-19", Path("PV1", None, 19, None, None, None)),
        ("OBX[12]-5[3].4.2", Path("OBX", 12, 5, 3, 4, 2)),
    ],
)
def test_valid_paths_parse_and_round_trip(text, expected):
    path = Path.parse(text)
    assert path == expected
    assert str(path) == text
    assert Path.parse(str(path)) == path


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("pid-3", "upper-case segment name"),
        ("PI-3", "upper-case segment name"),
        ("1ID-3", "upper-case segment name"),
        ("PID", "expected '-'"),
        ("PID.3", "not PID.3"),
        ("PID-", "expected a field number"),
        ("PID-x", "expected a field number"),
        ("PID-0", "start at 1"),
        ("OBX[0]-5", "start at 1"),
        ("OBX[]-5", "segment occurrence"),
        ("OBX[2-5", "expected ']'"),
        ("PID-3[1", "expected ']'"),
        ("PID-3.", "expected a component number"),
        ("PID-3.1.", "expected a sub-component number"),
        ("PID-3.1.2.3", "unexpected text"),
        ("PID-3 ", "unexpected text"),
        ("PID-3.1[2]", "unexpected text"),
        ("PIDX-3", "expected '-'"),
    ],
)
def test_invalid_paths_raise_path_error_with_a_reason(text, reason):
    with pytest.raises(PathError, match="HL7 path") as raised:
        Path.parse(text)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("text", "erl"),
    [
        ("PID-5", "PID^1^5"),
        ("PID-5.2", "PID^1^5^1^2"),
        ("PID-3[2]", "PID^1^3^2"),
        ("OBX[3]-5[2].4.1", "OBX^3^5^2^4^1"),
    ],
)
def test_erl_is_the_err_2_error_location(text, erl):
    assert Path.parse(text).erl() == erl


def test_erl_uses_the_message_component_separator():
    assert Path.parse("OBX[3]-5.4").erl(Delimiters("#", "$", "*", "@", "!")) == "OBX$3$5$1$4"


def test_at_pins_the_occurrence_and_repetition_and_keeps_the_rest():
    path = Path.parse("OBX-5.2.1")
    pinned = path.at(3, 2)
    assert pinned == Path("OBX", 3, 5, 2, 2, 1)
    assert str(pinned) == "OBX[3]-5[2].2.1"
    assert path.at(3, 2) is pinned  # cached: mappings pin the same paths for every message
    assert str(Path.parse("PID-3[2]").at(1, 2)) == "PID[1]-3[2]"
