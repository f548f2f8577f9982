"""README sections generated from the declared specs, so the documentation cannot drift.

``python -m engine.docs`` rewrites every generated section of README.md in place; the test
suite fails when a section is out of date.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path


def _channel_reference() -> str:
    from engine.channel.docs import channel_reference_markdown

    return channel_reference_markdown()


def _mapping_reference() -> str:
    from engine.mapping.grammar import render_markdown

    return render_markdown()


SECTIONS: dict[str, Callable[[], str]] = {
    "channel-reference": _channel_reference,
    "mapping-reference": _mapping_reference,
}

_SECTION = re.compile(
    r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.DOTALL
)


def render(readme: str) -> str:
    """``readme`` with every generated section replaced by its current text."""

    def replace(match: re.Match[str]) -> str:
        body = SECTIONS[match["name"]]().rstrip("\n") + "\n"
        return match.group(1) + body + match.group(4)

    return _SECTION.sub(replace, readme)


def main(path: str = "README.md") -> int:
    readme = Path(path)
    text = readme.read_text(encoding="utf-8")
    readme.write_text(render(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
