"""The value rules the vendor documents state, as the sandboxes read them.

Nothing here comes from the engine: a sandbox that borrowed the client's checks would pass the
client's misreadings (issue 10). Each rule is written from the document that states it (named
in each docstring); the vendor modules decide which field each rule applies to.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

__all__ = [
    "is_email",
    "is_mime_type",
    "is_nhs_number",
    "is_uuid",
    "parse_rfc3339",
    "snomed_concept_problem",
    "windows_file_name_problem",
]


def is_nhs_number(value: object) -> bool:
    """NHS Data Dictionary: ten digits, the tenth the Modulus 11 check digit of the first nine
    (weights 10 down to 2; 11 becomes 0; a result of 10 is never issued)."""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{10}", value):
        return False
    total = sum(int(digit) * (10 - i) for i, digit in enumerate(value[:9]))
    check = (11 - total % 11) % 11
    return check != 10 and check == int(value[9])


def is_uuid(value: object) -> bool:
    """A canonical 8-4-4-4-12 hex UUID string (the form conneQt's ``messageId`` example uses)."""
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def is_mime_type(value: object) -> bool:
    """``type/subtype`` (RFC 6838 token characters), as MedAllies' ``contentType`` holds."""
    return isinstance(value, str) and re.fullmatch(r"[\w.+-]+/[\w.+-]+", value) is not None


_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")


def is_email(value: object) -> bool:
    """A bare ``local@domain.tld`` address (Qliq e-mail recipients, Direct addresses): no
    display name, no spaces, a dotted domain."""
    return isinstance(value, str) and _ADDRESS.fullmatch(value) is not None


_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(value: object) -> datetime | None:
    """conneQt ``expiryDateTime``: "a full RFC3339 timestamp with 'Z' or offset"; None otherwise
    (a time without a zone is not full)."""
    found = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        return None
    zone = "+00:00" if found["zone"] in "Zz" else found["zone"]
    fraction = (found["fraction"] or "")[:7]  # microseconds are as fine as a datetime holds
    try:
        return datetime.fromisoformat(f"{found['date']}T{found['time']}{fraction}{zone}")
    except ValueError:
        return None


# Microsoft, "Naming Files, Paths, and Namespaces" (the page conneQt's fileName rule links).
_RESERVED_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{port}{n}" for port in ("COM", "LPT") for n in range(10)
}
_FORBIDDEN_CHARACTERS = re.compile(r'[<>:"/\\|?*]|[\x00-\x1f]')
_LONGEST_COMPONENT = 255


def windows_file_name_problem(name: str) -> str | None:
    """Why ``name`` breaks the Windows naming conventions or conneQt's own addition (no
    leading or trailing whitespace or periods); None when it is a valid file name."""
    if name == "":
        return "is empty"
    if name[0].isspace() or name[-1].isspace() or name[0] == "." or name[-1] == ".":
        return "has leading or trailing spaces or periods"
    if _FORBIDDEN_CHARACTERS.search(name):
        return 'contains a reserved character (<>:"/\\|?* or a control character)'
    if name.split(".", 1)[0].rstrip().upper() in _RESERVED_DEVICES:
        return "is a reserved device name"
    if len(name) > _LONGEST_COMPONENT:
        return f"is longer than {_LONGEST_COMPONENT} characters"
    return None


def _dihedral(j: int, k: int) -> int:
    """Product of two elements of the dihedral group D5 numbered 0–9 (Verhoeff's ``d``)."""
    if j < 5:
        return (j + k) % 5 + (0 if k < 5 else 5)
    return (j - k) % 5 + (5 if k < 5 else 0)


_VERHOEFF_STEP = (1, 5, 7, 6, 2, 8, 3, 0, 9, 4)
"""Verhoeff's permutation ``p``, applied once more for each position from the right."""


def _verhoeff_holds(digits: str) -> bool:
    check = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit)
        for _ in range(position % 8):
            value = _VERHOEFF_STEP[value]
        check = _dihedral(check, value)
    return check == 0


def snomed_concept_problem(value: str) -> str | None:
    """Why ``value`` is not a SNOMED CT concept id (conneQt ``codedDataItems[].code``): 6 to 18
    digits, no leading zero, partition ``00`` or ``10`` (a concept, short or long form), and a
    Verhoeff check digit."""
    if not re.fullmatch(r"[1-9][0-9]{5,17}", value):
        return "must be 6 to 18 digits without a leading zero"
    if value[-3:-1] not in ("00", "10"):
        return "is not a concept id (partition 00 or 10)"
    if not _verhoeff_holds(value):
        return "has a wrong check digit"
    return None
