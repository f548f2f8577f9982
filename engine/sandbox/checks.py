"""Value checks the vendor documents require: NHS numbers, SNOMED ids, file names, times."""

from __future__ import annotations

import datetime
import re
import uuid

# Verhoeff tables (dihedral group D5), as in the SNOMED CT release file specification 6.4.2.
_D5 = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_F = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4]]
for _row in range(2, 8):
    _F.append([_F[_row - 1][_F[1][j]] for j in range(10)])

SNOMED_CONCEPT_PARTITIONS = frozenset({"00", "10"})

_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"{p}{n}" for p in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]}
)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def is_nhs_number(value: str) -> bool:
    """Ten digits whose Modulus 11 check digit is right (a computed 10 is never issued)."""
    if not re.fullmatch(r"\d{10}", value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == int(value[9])


def verhoeff_ok(digits: str) -> bool:
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D5[check][_F[position % 8][int(digit)]]
    return check == 0


def snomed_concept_problem(code: str) -> str | None:
    """Why ``code`` is not a SNOMED CT concept id, or None when it is one."""
    if not re.fullmatch(r"[1-9]\d{5,17}", code):
        return "must be 6-18 digits without a leading zero"
    if code[-3:-1] not in SNOMED_CONCEPT_PARTITIONS:
        return "partition identifier is not a concept partition (00 or 10)"
    if not verhoeff_ok(code):
        return "Verhoeff check digit is wrong"
    return None


def windows_file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid Windows file name (Microsoft's naming conventions)."""
    if not name:
        return "must not be empty"
    if len(name) > 255:
        return "must be at most 255 characters"
    if name != name.strip() or name[0] == "." or name[-1] == ".":
        return "must not have leading or trailing whitespace or periods"
    if _WINDOWS_FORBIDDEN.search(name):
        return 'must not contain < > : " / \\ | ? * or control characters'
    if name.split(".")[0].rstrip().upper() in _WINDOWS_RESERVED:
        return "is a reserved device name"
    return None


def parse_rfc3339(value: str) -> datetime.datetime | None:
    """An aware datetime for a full RFC 3339 timestamp with Z or an offset, else None."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        return datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


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


def is_email(value: str) -> bool:
    return re.fullmatch(r"[^@\s,]+@[^@\s,]+\.[^@\s,]+", value) is not None
