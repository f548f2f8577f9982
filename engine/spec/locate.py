"""Finding the line of a key path in TOML text (``tomllib`` gives no positions)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from engine.spec.fields import Problem

# -- locating problems in TOML text -------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')"""
_KEY = re.compile(rf"^\s*({_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*)\s*=")
_INDEX = re.compile(r"\[(\d+)\]")


def _split_dotted(keys: str) -> list[str]:
    parts = re.findall(_BARE_OR_QUOTED, keys)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _skip_multiline(lines: list[str], start: int) -> int:
    """Index of the last line of the value that starts on ``lines[start]``."""
    depth, quote, i = 0, None, start
    while i < len(lines):
        line = lines[i] if i > start else lines[i].split("=", 1)[1]
        j = 0
        while j < len(line):
            ch = line[j]
            if quote:
                if line.startswith(quote, j):
                    j, quote = j + len(quote), None
                    continue
                if ch == "\\" and quote in ('"', '"""'):
                    j += 1
            elif line.startswith(('"""', "'''"), j):
                quote = line[j : j + 3]
                j += 3
                continue
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            j += 1
        if quote in ('"', "'"):
            quote = None
        if depth <= 0 and quote is None:
            return i
        i += 1
    return len(lines) - 1


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map every table header and key in TOML ``text`` to its 1-based line number.

    Paths are tuples like ``("destinations", "0", "retry", "max_attempts")``: arrays of
    tables count their ``[[...]]`` headers. tomllib gives no positions, so this scan is
    how problems get a line; it understands headers, dotted and quoted keys, and skips
    multi-line strings and arrays.
    """
    lines = text.splitlines()
    found: dict[tuple[str, ...], int] = {}
    arrays: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    i = 0
    while i < len(lines):
        header, key = _HEADER.match(lines[i]), _KEY.match(lines[i])
        if key:
            found.setdefault(table + tuple(_split_dotted(key.group(1))), i + 1)
            i = _skip_multiline(lines, i)
        elif header:
            table = _resolve_header(_split_dotted(header.group(2)), header.group(1), arrays)
            found.setdefault(table, i + 1)
        i += 1
    return found


def _resolve_header(names: list[str], bracket: str, arrays: dict[tuple[str, ...], int]) -> tuple[str, ...]:
    resolved: tuple[str, ...] = ()
    for n, name in enumerate(names):
        resolved += (name,)
        is_last = n == len(names) - 1
        if is_last and bracket == "[[":
            arrays[resolved] = arrays.get(resolved, -1) + 1
            resolved += (str(arrays[resolved]),)
        elif resolved in arrays:
            resolved += (str(arrays[resolved]),)
    return resolved


def split_key_path(key: str) -> tuple[str, ...]:
    """``destinations[0].retry`` → ``("destinations", "0", "retry")``."""
    return tuple(_split_dotted(_INDEX.sub(r".\1", key)))


def locate(lines: Mapping[tuple[str, ...], int], key: str) -> int | None:
    """The line of ``key``, or of its nearest declared ancestor (a missing key's table)."""
    parts = split_key_path(key)
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return None


def locate_problems(problems: list[Problem], file: Path, text: str) -> list[Problem]:
    """Attach ``file`` and the line of each problem's key path, found in ``text``."""
    lines = key_lines(text)
    return [Problem(p.key, p.message, file, p.line or locate(lines, p.key)) for p in problems]
