"""The shipped mappings against the shipped samples: payloads fit the destinations, and each
file in sample_messages/invalid/ is refused for the reason its name and the README give."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.destinations.payload import check_payload
from engine.destinations.registry import destination_class
from engine.errors import MessageError
from engine.mapping import MappingFailure, load_mapping
from engine.mapping.golden import GOLDEN_CONTEXT, golden_cases
from engine.mapping.render import accepted_messages, explain_file, map_file_json
from engine.message import Message
from engine.message import Path as HL7Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES, MAPPINGS = ROOT / "sample_messages", ROOT / "mappings"
INVALID = SAMPLES / "invalid"
CONNEQT = MAPPINGS / "oru_r01_to_conneqt.toml"


@pytest.mark.parametrize("file", sorted(MAPPINGS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_mapping_declares_only_keys_its_destination_knows(file):
    mapping = load_mapping(file)
    spec = destination_class(mapping.output).payload_spec
    for key in mapping.output_keys():
        assert spec.field(key.name) is not None, key.name
    for field in spec.fields:
        if field.required:
            assert field.name in {key.name for key in mapping.output_keys()}, field.name


SUCCESSES = [
    (case.sample, case.mapping)
    for case in golden_cases(SAMPLES, MAPPINGS, ROOT / "tests" / "golden")
    if "mapping_failure" not in case.golden.read_text(encoding="utf-8")
]


@pytest.mark.parametrize(("sample", "mapping_file"), SUCCESSES, ids=lambda p: p.stem)
def test_mapped_sample_passes_the_destination_payload_check(sample, mapping_file):
    mapping = load_mapping(mapping_file)
    for message in accepted_messages(mapping, sample.read_bytes()):
        payload = mapping.apply(message, context=GOLDEN_CONTEXT)
        assert check_payload(destination_class(mapping.output).payload_spec, payload) == []


@pytest.mark.parametrize(
    ("name", "code", "key", "location"),
    [
        ("oru_r01_missing_nhs_number", 101, "nhsNumber", "PID-3.1"),
        ("oru_r01_bad_nhs_check_digit", 102, "nhsNumber", "PID[1]-3[2].1"),
        ("oru_r01_unknown_practice", 103, "recipientId", "PD1[1]-3[1].3"),
        ("oru_r01_bad_snomed_code", 102, "codedDataItems[0].code", "OBX[1]-3[1].1"),
    ],
)
def test_invalid_samples_fail_the_conneqt_mapping_with_their_hl7_error(name, code, key, location):
    message = Message.parse((INVALID / f"{name}.hl7").read_bytes())
    with pytest.raises(MappingFailure) as caught:
        load_mapping(CONNEQT).apply(message)
    assert (caught.value.code, caught.value.key, caught.value.location) == (
        code,
        key,
        HL7Path.parse(location),
    )


def test_the_not_hl7_sample_has_no_msh():
    with pytest.raises(MessageError):
        Message.parse((INVALID / "none_no_msh.hl7").read_bytes())


@pytest.mark.parametrize(
    ("name", "attribute", "value"),
    [
        ("adt_a01_unsupported_type", "message_type", "ADT"),
        ("oru_r30_unsupported_event", "trigger_event", "R30"),
        ("oru_r01_unsupported_processing_id", "processing_id", "X"),
        ("oru_r01_unsupported_version", "version", "2.1"),
    ],
)
def test_refused_header_samples_carry_the_header_value_they_test(name, attribute, value):
    assert getattr(Message.parse((INVALID / f"{name}.hl7").read_bytes()), attribute) == value


def test_every_invalid_sample_is_listed_in_the_readme():
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for file in [*SAMPLES.glob("*.hl7"), *INVALID.glob("*.hl7")]:
        assert f"`{file.relative_to(SAMPLES)}`" in readme, file.name


def test_explain_shows_sources_values_and_the_failure_without_base64_walls(tmp_path):
    text = explain_file(load_mapping(CONNEQT), INVALID / "oru_r01_bad_nhs_check_digit.hl7")
    assert (
        "nhsNumber <- PID[1]-3[2].1: '9434765918' -> ''  ERROR nhsNumber: the NHS number check digit is wrong"
        in text
    )
    assert "recipientId <- PD1[1]-3[1].3: 'MOOR01' -> 'B86001'" in text
    assert "characters)" in text  # the PDF is shortened
    assert max(len(line) for line in text.splitlines()) < 250


def test_map_file_json_gives_a_list_for_a_batch():
    text = map_file_json(load_mapping(CONNEQT), SAMPLES / "oru_r01_batch_file.hl7")
    assert text.lstrip().startswith("[")
    assert text.count('"nhsNumber"') == 2


def test_the_embedded_report_is_a_two_page_pdf_with_a_correct_xref():
    import base64
    import re

    message = Message.parse((SAMPLES / "oru_r01_lab_fbc_pdf.hl7").read_bytes())
    pdf = base64.b64decode(message.get("OBX[6]-5.5"))
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"/Type /Pages /Kids [5 0 R 7 0 R] /Count 2" in pdf
    offsets = [int(o) for o in re.findall(rb"(\d{10}) 00000 n", pdf)]
    assert [pdf[o:].split(b" ", 1)[0] for o in offsets] == [
        str(n).encode() for n in range(1, len(offsets) + 1)
    ]
