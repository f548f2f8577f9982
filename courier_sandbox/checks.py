"""Value checks the sandboxes apply that the engine's own rules do not already cover.

NHS numbers, SNOMED CT concept ids, Windows file names, RFC 3339 times and e-mail addresses
are checked by the same functions the engine uses (:mod:`engine.mapping.checks`,
:mod:`engine.destinations.rules`): an algorithm such as Modulus 11 or Verhoeff has one right
implementation. What the sandboxes read independently from the vendor documents is *which*
rule applies to which field, in their own modules.
"""

from __future__ import annotations

import re
import uuid

from engine.destinations.rules import (
    is_email,
    parse_rfc3339,
    snomed_concept_problem,
    windows_file_name_problem,
)
from engine.mapping.checks import nhs_number_problem

__all__ = [
    "is_email",
    "is_mime_type",
    "is_nhs_number",
    "is_uuid",
    "parse_rfc3339",
    "snomed_concept_problem",
    "windows_file_name_problem",
]


def is_nhs_number(value: str) -> bool:
    """Ten digits whose Modulus 11 check digit is right."""
    return nhs_number_problem(value) is None


def is_uuid(value: object) -> bool:
    """A canonical 8-4-4-4-12 hex UUID string (the form the conneQt example uses)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def is_mime_type(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[\w.+-]+/[\w.+-]+", value) is not None
