"""The sandboxes' own value rules, on the values the vendor documents print."""

from __future__ import annotations

import pytest

from courier_sandbox.checks import (
    is_email,
    is_nhs_number,
    parse_rfc3339,
    snomed_concept_problem,
    windows_file_name_problem,
)


def test_nhs_number_modulus_11() -> None:
    assert is_nhs_number("9547852140")  # conneQt's example subject
    assert not is_nhs_number("9547852141")  # wrong check digit
    assert not is_nhs_number("1234567890")  # check digit 10 is never issued
    assert not is_nhs_number("954785214")
    assert not is_nhs_number("95478521４0")  # a non-ASCII digit


@pytest.mark.parametrize("code", ["407554009", "407555005", "248223005"])  # conneQt's example codes
def test_snomed_concepts_of_the_conneqt_example_pass(code: str) -> None:
    assert snomed_concept_problem(code) is None


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("407554008", "check digit"),
        ("407554019", "concept id"),  # partition 01: a description id
        ("12345", "6 to 18 digits"),
        ("0407554009", "6 to 18 digits"),
    ],
)
def test_snomed_codes_that_are_not_concepts(code: str, why: str) -> None:
    assert why in (snomed_concept_problem(code) or "")


def test_rfc3339_needs_a_zone() -> None:
    assert parse_rfc3339("2026-12-02T07:00:00Z") is not None
    assert parse_rfc3339("2026-12-02T07:00:00.123456789+01:00") is not None
    assert parse_rfc3339("2026-12-02T07:00:00") is None
    assert parse_rfc3339("2026-02-30T07:00:00Z") is None


@pytest.mark.parametrize("name", ["report.pdf", "Dispense Notification.pdf"])
def test_windows_file_names_that_pass(name: str) -> None:
    assert windows_file_name_problem(name) is None


@pytest.mark.parametrize("name", ["", " a.pdf", "a.pdf.", ".pdf", "a<b.pdf", "CON.pdf", "lpt1", "x" * 256])
def test_windows_file_names_that_fail(name: str) -> None:
    assert windows_file_name_problem(name) is not None


def test_email_addresses() -> None:
    assert is_email("dr.smith@direct.example.org")
    assert not is_email("Dr Smith <dr.smith@direct.example.org>")
    assert not is_email("dr.smith@localhost")
