"""The mapping grammar applied to real messages: paths, where, each with groups, templates,
defaults, required, and the MappingFailure codes and locations the ACK is built from."""

from __future__ import annotations

import pytest

from engine.mapping import MappingFailure, OutputKey, load_mapping
from engine.message.path import Path
from engine.message.reader import Message

ORU = "\r".join(
    [
        "MSH|^~\\&|LIS|CITYLAB|GPSYS|G85001|20240315103000||ORU^R01^ORU_R01|MSG0001|P|2.5.1",
        "PID|1||H123^^^CITY^MR~9434765919^^^NHS^NH||SMITH^ANNE^M||19800101|F|||1 High St^^Leeds^^LS1 1AA",
        "PD1|||Moor Practice^^G85001",
        "ORC|RE|PLC1|ACC1",
        "OBR|1|PLC1|ACC1|CBC^Full blood count|S",
        "OBX|1|NM|407554009^Systolic BP^SCT||140|mmHg|||||F",
        "OBX|2|TX|NOTE^Comment^L||First line~Second \\T\\ line||||||F",
        "OBX|3|ED|PDF^Report^L||^AP^PDF^Base64^SGVsbG8=||||||F",
        "OBR|2|PLC2|ACC2|BP^Blood pressure|R",
        "OBX|1|NM|407555005^Diastolic BP^SCT||80|mmHg|||||F",
        "OBX|2|CE|248223005^Feeling faint^SCT||Y||||||F",
        "OBX|3|ED|PDF^Report^L||^AP^PDF^Base64^V29ybGQ=||||||F",
    ]
).encode()


@pytest.fixture
def message() -> Message:
    return Message.parse(ORU)


@pytest.fixture
def mapping_from(tmp_path):
    def load(body: str, *, input: str = '["ORU^R01"]', output: str = "conneqt"):
        file = tmp_path / "m.toml"
        file.write_text(f"input = {input}\noutput = {output!r}\n{body}", encoding="utf-8")
        return load_mapping(file)

    return load


def fields(mapping_from, message, body, **context):
    return mapping_from("[fields]\n" + body).apply(message, context=context)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("PID-5", "SMITH^ANNE^M"),  # whole field, components kept
        ("PID-5.2", "ANNE"),
        ("PID-3[2].1", "9434765919"),
        ("PID-3.4.1", "CITY"),
        ("OBX[2]-3.1", "NOTE"),
        ("OBX[3]-5.5", "SGVsbG8="),
        ("OBR[2]-4.2", "Blood pressure"),
        ("MSH-9.2", "R01"),
        ("MSH-10", "MSG0001"),
        ("PID-11.5", "LS1 1AA"),
    ],
)
def test_paths_read_the_value_in_hl7_notation(mapping_from, message, path, expected):
    assert fields(mapping_from, message, f'v = "{path}"') == {"v": expected}


def test_escape_sequences_are_decoded(mapping_from, message):
    assert fields(mapping_from, message, 'v = "OBX[2]-5[2]"') == {"v": "Second & line"}


def test_where_on_the_same_field_picks_the_repetition(mapping_from, message):
    out = fields(mapping_from, message, 'v = { path = "PID-3.1", where = { "PID-3.5" = "NH" } }')
    assert out == {"v": "9434765919"}
    out = fields(mapping_from, message, 'v = { path = "PID-3.1", where = { "PID-3.5" = ["XX", "MR"] } }')
    assert out == {"v": "H123"}


def test_where_on_other_fields_filters_segments(mapping_from, message):
    out = fields(mapping_from, message, 'v = { path = "OBX-5", where = { "OBX-3.1" = "407555005" } }')
    assert out == {"v": "80"}
    out = fields(mapping_from, message, 'v = { path = "OBX-3.1", where = { "OBX-2" = "CE", "OBX-5" = "Y" } }')
    assert out == {"v": "248223005"}


def test_where_with_no_match_leaves_the_key_out(mapping_from, message):
    assert fields(mapping_from, message, 'v = { path = "PID-3.1", where = { "PID-3.5" = "XX" } }') == {}


def test_all_collects_segments_and_repetitions_and_join_combines(mapping_from, message):
    body = 'v = { path = "OBX-5", all = true, where = { "OBX-2" = "TX" }, transforms = [{ join = " / " }] }'
    assert fields(mapping_from, message, body) == {"v": "First line / Second & line"}
    out = fields(mapping_from, message, 'v = { path = "OBR-3", all = true }')
    assert out == {"v": ["ACC1", "ACC2"]}


def test_template_const_and_context(mapping_from, message):
    body = "\n".join(
        [
            't = { template = "{PID-5.2} {PID-5.1}: {OBR-4.2} {{x}}" }',
            'c = { const = "ToolbarInstantMessage" }',
            "b = { const = true }",
            'n = { context = "channel" }',
            'id = { template = "{context.channel}/{MSH-3}/{MSH-4}/{MSH-10}" }',
        ]
    )
    out = fields(mapping_from, message, body, channel="lab")
    assert out == {
        "t": "ANNE SMITH: Full blood count {x}",
        "c": "ToolbarInstantMessage",
        "b": True,
        "n": "lab",
        "id": "lab/LIS/CITYLAB/MSG0001",
    }


def test_default_fills_an_empty_value_before_transforms(mapping_from, message):
    body = """
[lookups.p]
R = "fyi"
[fields]
v = { path = "ORC-7", default = "R", transforms = [{ lookup = "p" }] }
"""
    assert mapping_from(body).apply(message) == {"v": "fyi"}


def test_each_makes_one_item_per_matching_segment_with_its_own_obr(mapping_from, message):
    body = """
[each.attachments]
segment = "OBX"
where = { "OBX-2" = "ED" }
min = 1
[each.attachments.fields]
content = { path = "OBX-5.5", transforms = ["base64_check"] }
fileName = { template = "{OBR-3.1}-{OBX-1}.pdf" }
priority = "OBR-5"
patient = "PID-5.1"
"""
    assert mapping_from(body).apply(message) == {
        "attachments": [
            {"content": "SGVsbG8=", "fileName": "ACC1-3.pdf", "priority": "S", "patient": "SMITH"},
            {"content": "V29ybGQ=", "fileName": "ACC2-3.pdf", "priority": "R", "patient": "SMITH"},
        ]
    }


def test_each_where_may_test_the_owning_obr(mapping_from, message):
    body = """
[each.bp]
segment = "OBX"
where = { "OBR-4.1" = "BP", "OBX-3.3" = "SCT" }
[each.bp.fields]
code = { path = "OBX-3.1", transforms = ["snomed_id"] }
value = { path = "OBX-5", where = { "OBX-2" = "NM" }, transforms = ["number"] }
unit = "OBX-6"
"""
    assert mapping_from(body).apply(message) == {
        "bp": [{"code": "407555005", "value": 80, "unit": "mmHg"}, {"code": "248223005"}]
    }


def test_mdm_obx_reads_the_txa_before_it(mapping_from):
    mdm = Message.parse(
        b"MSH|^~\\&|EPR|HOSP|GP|X|20240315||MDM^T02|M1|P|2.5\rEVN|T02|20240315\r"
        b"PID|1||9434765919^^^NHS^NH||DOE^JOHN\rPV1|1|I\rTXA|1|DS|TX|||||||||DOC-1||||||AU\r"
        b"OBX|1|TX|DS^Discharge||Line A\rOBX|2|TX|DS^Discharge||Line B\r"
    )
    body = '[each.lines]\nsegment = "OBX"\n[each.lines.fields]\ndoc = "TXA-12"\ntext = "OBX-5"\n'
    out = mapping_from(body, input='["MDM^T02"]').apply(mdm)
    assert out == {"lines": [{"doc": "DOC-1", "text": "Line A"}, {"doc": "DOC-1", "text": "Line B"}]}


def test_required_missing_fails_with_101_and_the_location(mapping_from, message):
    mapping = mapping_from("""
[fields]
nhs = { path = "PID-3.1", where = { "PID-3.5" = "XX" }, required = true }
""")
    with pytest.raises(MappingFailure) as caught:
        mapping.apply(message)
    failure = caught.value
    assert (failure.code, failure.key, failure.location) == (101, "nhs", Path.parse("PID-3.1"))
    assert "nhs" in failure.text


def test_invalid_value_fails_with_102_located_at_the_segment_read(mapping_from):
    bad = Message.parse(ORU.replace(b"9434765919", b"9434765918"))
    body = 'nhs = { path = "PID-3.1", where = { "PID-3.5" = "NH" }, transforms = ["nhs_number"] }'
    with pytest.raises(MappingFailure) as caught:
        fields(mapping_from, bad, body)
    failure = caught.value
    assert failure.code == 102
    assert failure.location == Path("PID", 1, 3, 2, 1, None)
    assert failure.location.erl() == "PID^1^3^2^1"
    assert "9434765918" not in failure.text  # no PHI in the text


def test_lookup_miss_fails_with_103_and_each_failures_name_the_item(mapping_from, message):
    body = """
[lookups.mime]
XML = "text/xml"
[each.attachments]
segment = "OBX"
where = { "OBX-2" = "ED" }
[each.attachments.fields]
mimeType = { path = "OBX-5.3", transforms = [{ lookup = "mime" }] }
"""
    with pytest.raises(MappingFailure) as caught:
        mapping_from(body).apply(message)
    assert caught.value.code == 103
    assert caught.value.key == "attachments[0].mimeType"
    assert caught.value.location == Path("OBX", 3, 5, 1, 3, None)


def test_each_below_min_fails_with_101(mapping_from, message):
    body = """
[each.pdfs]
segment = "OBX"
where = { "OBX-2" = "XX" }
min = 1
[each.pdfs.fields]
c = "OBX-5.5"
"""
    with pytest.raises(MappingFailure) as caught:
        mapping_from(body).apply(message)
    assert (caught.value.code, caught.value.key, str(caught.value.location)) == (101, "pdfs", "OBX-2")


def test_explain_traces_every_value_and_keeps_going_after_a_failure(mapping_from, message):
    body = """
a = { path = "PID-3.1", where = { "PID-3.5" = "XX" }, required = true }
b = { path = "PID-7", transforms = [{ date = "%d/%m/%Y" }] }
"""
    traces = mapping_from("[fields]\n" + body).explain(message)
    assert [t.key for t in traces] == ["a", "b"]
    assert traces[0].problem and traces[0].value == ""
    assert (traces[1].source, traces[1].raw, traces[1].value, traces[1].problem) == (
        "PID[1]-7[1]",
        "19800101",
        "01/01/1980",
        None,
    )


def test_accepts_matches_type_with_or_without_event(mapping_from, message):
    assert mapping_from("").accepts(message)
    assert mapping_from("", input='["ORU"]').accepts(message)
    assert not mapping_from("", input='["MDM^T02", "ORU^R30"]').accepts(message)


def test_output_keys_describe_the_payload(mapping_from):
    body = """
[fields]
a = { path = "PID-5", required = true }
b = "PID-7"
[each.x]
segment = "OBX"
min = 1
[each.x.fields]
c = { path = "OBX-5", required = true }
"""
    assert mapping_from(body).output_keys() == (
        OutputKey("a", True),
        OutputKey("b", False),
        OutputKey("x", True, (OutputKey("c", True),)),
    )


def test_a_list_of_paths_takes_the_first_with_a_value(mapping_from, message):
    out = fields(mapping_from, message, 'v = { path = ["ORC-7.6", "TQ1-9.1", "OBR-5"] }')
    assert out == {"v": "S"}
    out = fields(mapping_from, message, 'v = { path = ["ORC-2", "OBR-5"] }')
    assert out == {"v": "PLC1"}


@pytest.mark.parametrize(
    "path",
    [
        "PID-3",
        "PID-3.4",
        "PID-3[2].1",
        "PID-5.2",
        "OBX-5",
        "OBX[2]-5[2]",
        "OBR[2]-4.2",
        "ZZZ-1",
        "PID-99",
        "MSH-9.2",
    ],
)
@pytest.mark.parametrize("current", [None, "OBX[2]"])
def test_a_template_reads_a_path_as_the_path_itself_would(message, path, current):
    """PathSource.text (the templates' shortcut: no location, no Reading) reads what read() does."""
    from engine.mapping.rules import PathSource
    from engine.mapping.scope import Scope

    within = None if current is None else message.segment("OBX", 2)
    scope = Scope(message, {}, within)
    source = PathSource(Path.parse(path))
    assert source.text(scope) == source.read(scope).raw
