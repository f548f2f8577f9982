"""HL7 v2 escape sequences (``\\F\\``, ``\\X0D\\``, ``\\.br\\`` ...) in both directions.

A field's text is stored escaped; mappings and filters want the plain value, and the text we
write into ACKs and status messages must be escaped so it cannot break the message structure.
"""

from __future__ import annotations

from functools import lru_cache

from engine.message.delimiters import Delimiters

# Formatting commands (FT/TX data types) that end the current output line.
_LINE_BREAKS = frozenset({".br", ".ce"})
# Formatting commands with no meaning in plain text: fill mode on/off, indent.
_DROPPED = frozenset({".fi", ".nf", ".in", "H", "N"})


def unescape(text: str, delimiters: Delimiters, charset: str = "ascii") -> str:
    """Replace escape sequences with the text they stand for.

    ``\\X..\\`` hex data is decoded with ``charset`` (the message's character set). Sequences
    we do not understand (``\\C..\\``, ``\\M..\\``, ``\\Z..\\``, malformed ones) are kept verbatim
    so no information is lost.
    """
    esc = delimiters.escape
    if esc is None or esc not in text:
        return text
    out: list[str] = []
    start = 0
    while True:
        opening = text.find(esc, start)
        if opening < 0:
            break
        closing = text.find(esc, opening + 1)
        if closing < 0:
            break
        out.append(text[start:opening])
        out.append(_expand(text[opening + 1 : closing], delimiters, esc, charset))
        start = closing + 1
    out.append(text[start:])
    return "".join(out)


MAX_SPACING = 100
"""The most line breaks or spaces one ``\\.sp N\\`` (``.sk``, ``.ti``) expands to: a sender's
number must not decide how much memory decoding a field takes."""


def _expand(sequence: str, d: Delimiters, esc: str, charset: str) -> str:
    """The text for one escape sequence, given without its surrounding escape characters."""
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": esc}
    if d.truncation is not None:
        simple["P"] = d.truncation
    if sequence in simple:
        return simple[sequence]
    command, _, argument = sequence.partition(" ")
    if command in _DROPPED:
        return ""
    if command in _LINE_BREAKS:
        return "\n"
    if command in (".sp", ".sk", ".ti"):
        digits = argument.strip()
        count = int(digits) if digits.isascii() and digits.isdigit() else 1
        return ("\n" if command == ".sp" else " ") * min(count, MAX_SPACING)
    if sequence.startswith("X"):
        try:
            return bytes.fromhex(sequence[1:]).decode(charset, errors="replace")
        except ValueError:
            pass
    return esc + sequence + esc


def escape(text: str, delimiters: Delimiters) -> str:
    """Escape the delimiter characters in ``text`` and turn line breaks into ``\\.br\\``.

    Used wherever Courier writes free text into HL7 (ERR-8, MSA-3, status messages, documents
    and replies from a vendor). With no escape character (a three-character MSH-2) they cannot
    be escaped: each becomes a space. Other control characters become spaces too: text from
    outside must never carry MLLP's block bytes (0x0B, 0x1C) into a frame for the hospital.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.translate(_escapes(delimiters))


_CONTROLS = {chr(code): " " for code in (*range(0x20), 0x7F) if chr(code) not in "\t\n"}
"""C0 controls (but tab and the line break, which becomes ``\\.br\\``) and DEL → a space."""


@lru_cache(maxsize=64)
def _escapes(d: Delimiters) -> dict[int, str]:
    """The translation table for one set of delimiters: built once, not for every ACK."""
    if d.escape is None:
        special = [d.field, d.component, d.subcomponent, d.repetition, "\n", d.truncation]
        return str.maketrans({**_CONTROLS, **{char: " " for char in special if char is not None}})
    table = {
        **_CONTROLS,
        d.escape: f"{d.escape}E{d.escape}",
        d.field: f"{d.escape}F{d.escape}",
        d.component: f"{d.escape}S{d.escape}",
        d.subcomponent: f"{d.escape}T{d.escape}",
        d.repetition: f"{d.escape}R{d.escape}",
        "\n": f"{d.escape}.br{d.escape}",
    }
    if d.truncation is not None:
        table[d.truncation] = f"{d.escape}P{d.escape}"
    return str.maketrans(table)
