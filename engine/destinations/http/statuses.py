"""Which HTTP status codes mean accepted, retry or hold, as a channel file writes them.

A class is a code (``"404"``) or a hundred (``"5xx"``). Every answer no class names is
rejected, so a mistyped list fails messages loudly rather than resending them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_CLASS = re.compile(r"^[1-5](\d\d|xx)$")


def check_class(text: str) -> str | None:
    """The spec's per-item check: a problem text, or None when ``text`` is a status class."""
    return None if _CLASS.match(text) else f"{text!r} is not a status code (e.g. 404) or a hundred (e.g. 5xx)"


def matches(status: int, classes: Iterable[str]) -> bool:
    """Whether ``status`` is one of ``classes`` (checked with :func:`check_class`)."""
    code = str(status)
    return any(c == code or (c.endswith("xx") and c[0] == code[0]) for c in classes)


def outside(classes: Iterable[str], allowed_hundreds: str) -> list[str]:
    """The classes whose hundred is not among ``allowed_hundreds`` (e.g. ``"2"``)."""
    return [c for c in classes if c[0] not in allowed_hundreds]
