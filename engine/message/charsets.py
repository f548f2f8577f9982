"""MSH-18 character set names (HL7 table 0211) → Python codecs.

Only codecs that leave ASCII unchanged are usable: we find MSH on the raw bytes before we know
the character set, so a UTF-16 or UTF-32 message could not have been read this far anyway.
"""

from __future__ import annotations

import codecs
from functools import lru_cache

_TABLE_0211 = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "ISO IR14": "iso2022_jp",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_1",
    "UNICODE": "utf-8",  # ER7 text declared as plain "UNICODE" is UTF-8 in practice
    "UNICODE UTF-8": "utf-8",
    "BIG-5": "big5",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
}


def lookup(name: str) -> codecs.CodecInfo | None:
    """The codec called ``name``, or None: for an unknown name, and for one ``codecs.lookup``
    cannot even look up (a NUL byte makes it raise ValueError, not LookupError)."""
    try:
        return codecs.lookup(name)
    except (LookupError, ValueError):
        return None


@lru_cache(maxsize=64)
def codec_for(name: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when we cannot decode text declared so.

    Table 0211 names come first; anything else is tried as a codec name (``UTF-8``,
    ``ISO-8859-1``, ``windows-1252``), because many senders write those instead.
    """
    key = " ".join(name.upper().split())
    info = lookup(_TABLE_0211.get(key, key))
    if info is None:
        return None
    try:
        ascii_safe = "MSH|^~\\&".encode(info.name) == b"MSH|^~\\&"
    except (UnicodeError, LookupError):  # LookupError: a bytes codec such as hex or zlib
        ascii_safe = False
    return info.name if ascii_safe else None
