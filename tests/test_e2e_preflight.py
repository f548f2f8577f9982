"""Pre-flight: messages a vendor would refuse are refused at the door, and nothing is sent.

Each destination rule the example channels exercise gets one offending message over MLLP:
the sender gets AR (CR when it asked for enhanced mode) with an ERR that says what (ERR-3,
HL7 table 0357), where (ERR-2) and why (ERR-8); the store holds no delivery for it and the
vendor sandbox received nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from tests.support import e2e
from tests.support.e2e import sample, set_field, with_msh

sandboxes, hospital, store, engine = e2e.sandboxes, e2e.hospital, e2e.store, e2e.engine  # fixtures


def replaced(segment: str, field: int, value: str) -> Callable[[bytes], bytes]:
    """An edit: one field of the first ``segment`` replaced."""
    return partial(set_field, segment=segment, field=field, value=value)


def corrupt_base64(raw: bytes) -> bytes:
    return raw.replace(b"^Base64^JVBER", b"^Base64^*JVBER", 1)


def unchanged(raw: bytes) -> bytes:
    return raw


# case → (channel, sample, edit, MSA-1, ERR-3 code, ERR-2, words in ERR-8)
CASES = {
    "conneqt: NHS number missing": (
        "lis-oru-to-conneqt",
        "invalid/oru_r01_missing_nhs_number.hl7",
        unchanged,
        "AR",
        "101",
        "PID^1^3^1^1",
        "gp-conneqt: nhsNumber: required",
    ),
    "conneqt: NHS number check digit": (
        "lis-oru-to-conneqt",
        "invalid/oru_r01_bad_nhs_check_digit.hl7",
        unchanged,
        "AR",
        "102",
        "PID^1^3^2^1",
        "gp-conneqt: nhsNumber: the NHS number check digit is wrong",
    ),
    "conneqt: practice not in the ODS lookup": (
        "lis-oru-to-conneqt",
        "invalid/oru_r01_unknown_practice.hl7",
        unchanged,
        "AR",
        "103",
        "PD1^1^3^1^3",
        "gp-conneqt: recipientId: the value has no entry in lookup",
    ),
    "conneqt: SNOMED CT check digit": (
        "lis-oru-to-conneqt",
        "invalid/oru_r01_bad_snomed_code.hl7",
        unchanged,
        "AR",
        "102",
        "OBX^1^3^1^1",
        "gp-conneqt: codedDataItems[0].code: the SNOMED CT id check digit",
    ),
    "medallies: gender not in table 0001": (
        "ris-oru-to-medallies",
        "oru_r01_radiology_mri.hl7",
        replaced("PID", 8, "Z"),
        "AR",
        "103",
        "PID^1^8^1",
        "referrers-direct: patientGender must be from table 0001",
    ),
    "medallies: date of birth without a day": (
        "ris-oru-to-medallies",
        "oru_r01_radiology_mri.hl7",
        replaced("PID", 7, "1961"),
        "AR",
        "102",
        "PID^1^7^1^1",
        "referrers-direct: patientDOB",
    ),
    "medallies: referrer without a Direct address": (
        "ris-oru-to-medallies",
        "oru_r01_radiology_mri.hl7",
        replaced("OBR", 28, "555"),
        "AR",
        "103",
        "OBR^1^28^1^1",
        "referrers-direct: toDirectAddress: the value has no entry in lookup",
    ),
    "qliq: ward without a Qliq group": (
        "ehr-mdm-to-qliq",
        "mdm_t02_discharge_summary.hl7",
        replaced("PV1", 3, "ICU"),
        "CR",
        "103",
        "PV1^1^3^1^1",
        "care-team-qliq: to: the value has no entry in lookup",
    ),
    "qliq: attachment not Base64": (
        "ehr-mdm-to-qliq",
        "mdm_t02_discharge_summary.hl7",
        corrupt_base64,
        "CR",
        "102",
        "OBX^3^5^1^5",
        "care-team-qliq: attachments[0].base64",
    ),
    "kpn: ward without a group chat": (
        "ehr-mdm-to-kpn",
        "mdm_t02_escapes_lf.hl7",
        replaced("PV1", 3, "ICU"),
        "AR",
        "103",
        "PV1^1^3^1^1",
        "ward-kpn: aux_id: the value has no entry in lookup",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_offending_message_is_refused_with_a_useful_err_and_nothing_is_sent(engine, sandboxes, case):
    channel, name, edit, code, err3, err2, words = CASES[case]
    requests_before = {s.name: len(s.state.requests) for s in sandboxes}  # token grants
    ack = engine.send(channel, edit(with_msh(sample(name), control_id="PREFLIGHT-1")))

    msa = ack.segment("MSA")
    assert (msa.value(1), msa.value(2)) == (code, "PREFLIGHT-1"), ack.text
    [err] = ack.all("ERR")
    assert err.value(3, component=1) == err3
    assert err.value(3, component=3) == "HL70357"
    assert err.field(2) == err2
    assert err.value(4) == "E"
    assert words in err.value(8)
    assert engine.deliveries("PREFLIGHT-1") == []
    assert {s.name: len(s.state.requests) for s in sandboxes} == requests_before
