"""Check-digit algorithms for the identifiers mappings validate: NHS number and SNOMED CT id.

Both are pure functions returning the reason a value is wrong (``None`` when it is fine), so
the ``nhs_number`` and ``snomed_id`` validators can report *why* without echoing the value.
"""

from __future__ import annotations

_NHS_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)

# Verhoeff dihedral D5 tables, from the SNOMED CT release file specification §6.4.2.
_D5 = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_F = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_SCTID_PARTITIONS = frozenset({"00", "01", "02", "10", "11", "12", "16"})


def nhs_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid NHS number (10 digits, modulus 11 check digit), or None."""
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return "an NHS number must be exactly 10 digits"
    remainder = sum(int(d) * w for d, w in zip(value, _NHS_WEIGHTS, strict=False)) % 11
    check = 11 - remainder
    if check == 10:
        return "the NHS number has a check digit of 10, which is never issued"
    if check % 11 != int(value[9]):
        return "the NHS number check digit is wrong"
    return None


def verhoeff_valid(digits: str) -> bool:
    """True when the string of digits ends in a correct Verhoeff check digit."""
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D5[check][_F[position % 8][int(digit)]]
    return check == 0


def sctid_problem(value: str) -> str | None:
    """Why ``value`` is not a SNOMED CT identifier (6–18 digits, partition, Verhoeff), or None."""
    if not value.isascii() or not value.isdigit() or not 6 <= len(value) <= 18:
        return "a SNOMED CT id must be 6 to 18 digits"
    if value[0] == "0":
        return "a SNOMED CT id has no leading zero"
    if value[-3:-1] not in _SCTID_PARTITIONS:
        return "the SNOMED CT id has an unknown partition identifier"
    if not verhoeff_valid(value):
        return "the SNOMED CT id check digit is wrong"
    return None
