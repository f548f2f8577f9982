"""``courier map`` run as an operator runs it: its exit code says whether the mapping worked,
and a file it cannot map is one line on stderr, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONNEQT = ROOT / "mappings" / "oru_r01_to_conneqt.toml"
SAMPLES = ROOT / "sample_messages"


def courier_map(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine", "map", str(CONNEQT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_message_the_mapping_takes_prints_its_payload_and_exits_0() -> None:
    result = courier_map(str(SAMPLES / "oru_r01_lab_fbc_pdf.hl7"))
    assert result.returncode == 0, result.stderr
    assert '"nhsNumber"' in result.stdout and result.stderr == ""


@pytest.mark.parametrize("explain", [[], ["--explain"]])
def test_a_message_the_mapping_refuses_exits_1(explain) -> None:
    result = courier_map(str(SAMPLES / "invalid" / "oru_r01_bad_nhs_check_digit.hl7"), *explain)
    assert result.returncode == 1
    assert "check digit" in result.stdout
    assert result.stderr == "courier map: the mapping refuses this message (see above)\n"


def test_a_message_type_the_mapping_does_not_take_is_explained_not_an_empty_result() -> None:
    result = courier_map(str(SAMPLES / "mdm_t02_discharge_summary.hl7"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"courier map: nothing to map: {CONNEQT} takes ORU^R01 "
        f"and {SAMPLES / 'mdm_t02_discharge_summary.hl7'} holds MDM^T02\n"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read it: No such file or directory"),
        (b"call the lab about the analyser\n", "not HL7: segment 'cal' on line 1 precedes any MSH"),
        (b"\n\n", "not HL7: no MSH segment"),
    ],
)
def test_a_file_that_is_not_hl7_is_one_line_and_exit_2(tmp_path, content, reason) -> None:
    file = tmp_path / "message.hl7"
    if content is not None:
        file.write_bytes(content)
    result = courier_map(str(file))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"courier map: {file}: {reason}\n"


def test_map_whose_output_pipe_is_closed_ends_quietly() -> None:
    command = [sys.executable, "-m", "engine", "map", str(CONNEQT), str(SAMPLES / "oru_r01_lab_fbc_pdf.hl7")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    assert stderr == b"" and process.returncode == 141


def test_a_directory_with_a_file_that_is_not_hl7_maps_the_others_and_exits_2(tmp_path) -> None:
    (tmp_path / "a_result.hl7").write_bytes((SAMPLES / "oru_r01_lab_fbc_pdf.hl7").read_bytes())
    (tmp_path / "b_notes.txt").write_bytes(b"call the lab about the analyser\n")
    result = courier_map(str(tmp_path), str(tmp_path / "missing.hl7"))
    assert result.returncode == 2
    assert '"nhsNumber"' in result.stdout, "the good file is still mapped"
    assert result.stderr.splitlines() == [
        f"courier map: {tmp_path / 'b_notes.txt'}: not HL7: segment 'cal' on line 1 precedes any MSH",
        f"courier map: {tmp_path / 'missing.hl7'}: cannot read it: No such file or directory",
    ]


def test_explain_shows_a_control_id_with_control_characters_escaped(tmp_path) -> None:
    raw = (SAMPLES / "oru_r01_lab_fbc_pdf.hl7").read_bytes()
    control_id = raw.split(b"\r", 1)[0].split(b"|")[9]
    file = tmp_path / "escaped.hl7"
    file.write_bytes(raw.replace(b"|" + control_id + b"|", b"|EVIL\\X0A\\FORGED|", 1))
    result = courier_map(str(file), "--explain")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "# ORU^R01 EVIL\\nFORGED"
