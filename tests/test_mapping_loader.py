"""Broken mapping files are refused with file, key path and line, and a hint where one helps."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.mapping import load_mapping

HEAD = 'input = ["ORU^R01"]\noutput = "conneqt"\n'


def problems_of(tmp_path, text: str) -> list[str]:
    file = tmp_path / "broken.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_mapping(file)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{file}:") for line in lines)
    return [line[len(str(file)) + 1 :] for line in lines]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[fields]\na = "PID-5"\nb = { path = "PID-3", requird = true }\n',
            "5: fields.b.requird: unknown key; did you mean 'required'?",
        ),
        (
            '[fields]\nb = { path = "PID-3", transforms = ["strip", "uper"] }\n',
            "4: fields.b.transforms[1]: unknown transform 'uper' (did you mean 'upper'?)",
        ),
        (
            '[fields]\n\nb = { path = "PID.3" }\n',
            "5: fields.b.path: invalid HL7 path 'PID.3' at character 4: expected '-' and a field number "
            "after the segment (HL7 paths use '-' before the field: PID-3, not PID.3)",
        ),
        (
            '[lookups.ods]\nA = "B"\n[fields]\nb = { path = "PD1-3", transforms = [{ lookup = "odss" }] }\n',
            "6: fields.b.transforms[0]: unknown lookup 'odss' (did you mean 'ods'?)",
        ),
        (
            '[fields]\nb = { path = "PID-3.1", where = { "PID-3,5" = "NH" } }\n',
            "4: fields.b.where.\"PID-3,5\": invalid HL7 path 'PID-3,5' at character 6: "
            "unexpected text after the path",
        ),
        (
            '[fields]\nb = { template = "{PID-5.2} {PID5}" }\n',
            "4: fields.b.template: invalid HL7 path 'PID5' at character 4: expected '-' and a field number "
            "after the segment",
        ),
        ('[fields]\nb = { template = "{PID-5" }\n', "4: fields.b.template: unbalanced brace"),
        ('[fields]\nb = { path = "PID-5", const = "x" }\n', "4: fields.b: give exactly one of"),
        (
            '[fields]\nb = { const = 3, transforms = ["upper"] }\n',
            "4: fields.b.transforms: transforms apply to text",
        ),
        ('[fields]\nb = { path = "OBX-5", transforms = [{ join = "," }] }\n', "needs all = true"),
        (
            '[each.a]\nsegment = "OBX"\nmin = -1\n[each.a.fields]\nx = "OBX-5"\n',
            "5: each.a.min: expected a whole number, 0 or more",
        ),
        ('[each.a]\nsegment = "obx"\n', "4: each.a.segment: expected a segment name"),
        ("[feilds]\n", "3: feilds: unknown key; did you mean 'fields'?"),
        ('[fields]\nb = { path = ["PID-5", "PID5"] }\n', "4: fields.b.path[1]: invalid HL7 path 'PID5'"),
        ("[fields]\nb = { path = 5 }\n", "4: fields.b.path: expected an HL7 path or a list of them"),
    ],
)
def test_broken_mapping_files_name_line_key_and_problem(tmp_path, body, expected):
    found = problems_of(tmp_path, HEAD + body)
    assert any(line.startswith(expected) or expected in line for line in found), found


def test_input_and_output_are_checked(tmp_path):
    found = problems_of(tmp_path, 'input = ["ORU-R01"]\noutput = "conect"\n')
    assert "1: input[0]: 'ORU-R01' is not a message type such as ORU^R01 or MDM" in found
    assert any(
        line.startswith("2: output: expected one of conneqt, http, kpn, medallies, qliq") for line in found
    )
    assert "; did you mean 'conneqt'?" in found[-1]


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    found = problems_of(tmp_path, HEAD + '[fields]\na = { path = "PID-" }\nb = { pth = "PID-5" }\n')
    assert [line.split(":")[0] for line in found] == ["4", "5", "5"]


def test_toml_syntax_errors_keep_tomllib_line(tmp_path):
    found = problems_of(tmp_path, HEAD + "[fields]\na = { path = \n")
    assert found[0].startswith("4: not valid TOML")


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read mapping file"):
        load_mapping(tmp_path / "absent.toml")


def test_a_good_file_loads_with_its_declared_input_and_output(tmp_path):
    file = tmp_path / "ok.toml"
    file.write_text('input = "MDM^T02"\noutput = "qliq"\n[fields]\nsubject = "TXA-12"\n', encoding="utf-8")
    mapping = load_mapping(file)
    assert (mapping.path, mapping.input, mapping.output) == (file, ("MDM^T02",), "qliq")


def test_the_grammar_reference_lists_every_key_and_transform():
    from engine.mapping.grammar import EACH_KEYS, FIELD_KEYS, MAPPING_KEYS, TRANSFORMS, render_markdown

    text = render_markdown()
    for name in [*MAPPING_KEYS, *FIELD_KEYS, *EACH_KEYS, *TRANSFORMS]:
        assert f"| `{name}` |" in text, name


def test_the_loader_accepts_exactly_the_declared_keys(tmp_path):
    from engine.mapping.grammar import EACH_KEYS, FIELD_KEYS

    found = problems_of(
        tmp_path, HEAD + '[fields]\na = { path = "PID-5", sorce = "x" }\n[each.e]\nsegmnt = "OBX"\n'
    )
    assert "4: fields.a.sorce: unknown key" in found[0]
    assert any("each.e.segmnt: unknown key; did you mean 'segment'?" in line for line in found)
    assert "sorce" not in FIELD_KEYS and "segment" in EACH_KEYS
