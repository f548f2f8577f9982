"""Text from a sender made safe to print: one line, no terminal control, bounded length.

An MSH-10 is the sender's text: ``\\X0A\\`` decodes to a line feed, and raw control bytes, a
right-to-left override or a megabyte of text can all arrive in it. Every log line and CLI
table that shows a control id (or another value a sender chose) passes it through here.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
DEFAULT_LIMIT = 200  # HL7 v2.7 allows a 199-character MSH-10: a real one is never cut


def printable(text: str, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` with control and invisible characters escaped as ``repr`` would (``\\n``,
    ``\\x00``, ``\\u202e``; a backslash doubled, so the result is unambiguous), cut to ``limit``
    characters with ``…``."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return _UNPRINTABLE.sub(_escaped, cut)


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")
