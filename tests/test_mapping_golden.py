"""Golden files: each sample × matching mapping still gives exactly the recorded result.

After a deliberate change, regenerate with ``courier map --update-golden`` (which calls
:func:`engine.mapping.golden.update_golden`) and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.mapping.golden import golden_cases, update_golden

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, MAPPINGS, GOLDEN = ROOT / "sample_messages", ROOT / "mappings", ROOT / "tests" / "golden"
CASES = golden_cases(SAMPLES, MAPPINGS, GOLDEN)


@pytest.mark.parametrize("case", CASES, ids=[case.golden.stem for case in CASES])
def test_sample_maps_to_its_golden_file(case):
    assert case.golden.exists(), f"no golden file; run courier map --update-golden ({case.golden.name})"
    assert json.loads(case.render()) == json.loads(case.golden.read_text(encoding="utf-8"))


def test_every_golden_file_belongs_to_a_case():
    assert {p.name for p in GOLDEN.glob("*.json")} == {case.golden.name for case in CASES}


def test_each_shipped_mapping_has_a_successful_golden():
    succeeded = {
        case.mapping.stem
        for case in CASES
        if "mapping_failure" not in case.golden.read_text(encoding="utf-8")
    }
    assert succeeded == {p.stem for p in MAPPINGS.glob("*.toml")}


def test_update_golden_writes_all_and_removes_stale_files(tmp_path):
    (tmp_path / "gone__old.json").write_text("{}", encoding="utf-8")
    written = update_golden(SAMPLES, MAPPINGS, tmp_path)
    assert sorted(p.name for p in written) == sorted(case.golden.name for case in CASES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    sample = tmp_path / "mdm_t02_discharge_summary__mdm_t02_to_qliq.json"
    assert json.loads(sample.read_text(encoding="utf-8"))["priority"] == "urgent"
