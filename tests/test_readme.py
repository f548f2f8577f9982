"""The README's generated sections match the specs they document, and its examples are real."""

from __future__ import annotations

import re
from pathlib import Path

from engine.docs import render

README = Path(__file__).resolve().parent.parent / "README.md"


def test_generated_sections_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert "<!-- generated: channel-reference -->" in text
    assert render(text) == text, "run `python -m engine.docs` to refresh README.md"


def test_embedded_example_files_are_the_shipped_ones() -> None:
    text = README.read_text(encoding="utf-8")
    for name in ("channels/lis_oru_to_conneqt.toml", "mappings/mdm_t02_to_qliq.toml"):
        shipped = (README.parent / name).read_text(encoding="utf-8")
        assert shipped.strip() in text, f"README's copy of {name} is out of date"


def test_quick_start_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    text = README.read_text(encoding="utf-8")
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick_start, re.DOTALL)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()
