"""Filter condition strings: the small grammar and its errors."""

from __future__ import annotations

import pytest

from engine.channel.conditions import condition_problem, parse_condition
from engine.message.path import Path


def test_parse_each_operator():
    assert parse_condition("OBR-25 = F").values == ("F",)
    assert parse_condition("OBR-25 != 'P'").values == ("P",)
    condition = parse_condition("OBR-25 in F, C,'X Y'")
    assert (condition.path, condition.op, condition.values) == (Path.parse("OBR-25"), "in", ("F", "C", "X Y"))
    assert parse_condition("PID-3 exists").values == ()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("OBR-25", "expected '<HL7 path> <op> <value>'"),
        ("OBR-25 ~ F", "expected '<HL7 path> <op> <value>'"),
        ("OBR-25 =", "'=' needs a value"),
        ("PID-3 exists X", "'exists' takes no value"),
        ("obr-25 = F", "invalid HL7 path"),
    ],
)
def test_problems(text, problem):
    assert problem in condition_problem(text)


def test_good_condition_has_no_problem():
    assert condition_problem("OBR-25 in F,C") is None
