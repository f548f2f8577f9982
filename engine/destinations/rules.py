"""Pure checks the vendor documents impose on field values (no I/O, no PHI in results).

Each function answers one question about one value; the destinations turn the answers into
:class:`~engine.destinations.base.Problem` entries with the right table-0357 code. The NHS
number and SCTID check digits live with the mapping validators (``engine.mapping.checks``).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from engine.mapping.checks import sctid_problem

#: Partition ids (2nd and 3rd digits from the right) of SNOMED CT *concepts*, short and long
#: format. Description, relationship and expression ids pass the generic SCTID check but are
#: not codes a coded data item can carry.
_CONCEPT_PARTITIONS = frozenset({"00", "10"})


def snomed_concept_problem(value: str) -> str | None:
    """Why ``value`` is not a SNOMED CT concept id (SCTID rules plus concept partition)."""
    problem = sctid_problem(value)
    if problem is None and value[-3:-1] not in _CONCEPT_PARTITIONS:
        return "the SNOMED CT id is not a concept id (partition 00 or 10)"
    return problem


_WINDOWS_RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')


def windows_file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid Windows file name (Microsoft "Naming a file"), or None."""
    if not name:
        return "is empty"
    if name != name.strip() or name.startswith(".") or name.endswith("."):
        return "has leading or trailing spaces or periods"
    if _WINDOWS_FORBIDDEN.search(name):
        return 'contains a character Windows forbids (<>:"/\\|?* or a control character)'
    if name.split(".")[0].upper() in _WINDOWS_RESERVED_NAMES:
        return "is a reserved Windows device name"
    if len(name) > 255:
        return "is longer than 255 characters"
    return None


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: object) -> datetime | None:
    """An RFC 3339 timestamp *with* ``Z`` or an offset, as an aware datetime; else None."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_vendor_time(value: object) -> datetime | None:
    """An ISO 8601 time as webhooks send it, lenient: ``Z`` or ``z`` or an offset, and a time
    with none of them read as UTC (``2017-06-13T16:25:54.873043z``); None when unreadable."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.strip().rstrip("zZ"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def base64_decoded_size(value: str) -> int | None:
    """Bytes after strict Base64 decoding, or None when ``value`` is not valid Base64."""
    try:
        return len(base64.b64decode("".join(value.split()), validate=True))
    except (binascii.Error, ValueError):
        return None


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def is_email(value: str) -> bool:
    """An e-mail / Direct address: local@domain.tld, no spaces, no display name."""
    return bool(_EMAIL.match(value))


def is_date_yyyymmdd(value: str) -> bool:
    """A real calendar date written YYYYMMDD (MedAllies patientDOB)."""
    if len(value) != 8 or not value.isdigit():
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True
