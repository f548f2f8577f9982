"""Golden files: the expected result of every sample message under every mapping that takes it.

``tests/golden/<sample>__<mapping>.json`` holds what ``courier map`` prints for that pair —
the payload, or the expected refusal. ``courier map --update-golden`` calls
:func:`update_golden` after a deliberate change; ``tests/test_mapping_golden.py`` compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath

from engine.mapping.loader import load_mapping
from engine.mapping.render import accepted_messages, map_file_json

GOLDEN_CONTEXT = {"channel": "golden"}  # the context values every golden file is made with


@dataclass(frozen=True)
class GoldenCase:
    """One sample × mapping pair and the golden file that records its expected result."""

    sample: FilePath
    mapping: FilePath
    golden: FilePath

    def render(self) -> str:
        """The result as it is now, in golden-file form."""
        return map_file_json(load_mapping(self.mapping), self.sample, context=GOLDEN_CONTEXT)


def golden_cases(samples_dir: FilePath, mappings_dir: FilePath, golden_dir: FilePath) -> list[GoldenCase]:
    """Every (sample, mapping) pair where the mapping's input matches a message in the sample."""
    mappings = [(file, load_mapping(file)) for file in sorted(FilePath(mappings_dir).glob("*.toml"))]
    cases = []
    for sample in sorted(FilePath(samples_dir).glob("*.hl7")):
        data = sample.read_bytes()
        for file, mapping in mappings:
            if accepted_messages(mapping, data):
                golden = FilePath(golden_dir) / f"{sample.stem}__{file.stem}.json"
                cases.append(GoldenCase(sample, file, golden))
    return cases


def update_golden(samples_dir: FilePath, mappings_dir: FilePath, golden_dir: FilePath) -> list[FilePath]:
    """(Re)write every golden file, delete those no pair produces any more; return those written."""
    golden_dir = FilePath(golden_dir)
    golden_dir.mkdir(parents=True, exist_ok=True)
    cases = golden_cases(samples_dir, mappings_dir, golden_dir)
    for case in cases:
        case.golden.write_text(case.render(), encoding="utf-8")
    wanted = {case.golden for case in cases}
    for stale in golden_dir.glob("*__*.json"):
        if stale not in wanted:
            stale.unlink()
    return [case.golden for case in cases]
