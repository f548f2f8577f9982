"""Every example channel over real MLLP into the real vendor sandboxes (issue "destinations").

Each shipped sample goes in over a real MLLP connection to ``channels/*.toml`` as shipped
(pointed at the sandboxes), is ACKed, mapped and delivered over HTTP; the tests then read
what the sandbox received, field by field, and the delivery's state in the store.
"""

from __future__ import annotations

import base64
import json
import logging

import pytest

from engine.delivery import idempotency_key
from engine.destinations.base import message_uuid
from engine.logs import JsonFormatter
from engine.message import Message
from engine.store.base import DELIVERED, ERROR, READ, SENT
from tests.support import e2e
from tests.support.e2e import obx_pdf, sample, set_field, wait_for, with_msh

sandboxes, hospital, store, engine = e2e.sandboxes, e2e.hospital, e2e.store, e2e.engine  # fixtures

SENT_OR_LATER = (SENT, DELIVERED, READ)


def sent_requests(sandbox, path_end: str) -> list:
    return [r for r in sandbox.state.requests if r.method == "POST" and r.path.endswith(path_end)]


def expected_message_id(delivery) -> str:
    return str(message_uuid(idempotency_key(delivery)))


def test_lab_result_reaches_the_gp_over_conneqt(engine, sandboxes):
    raw = sample("oru_r01_lab_fbc_pdf.hl7")
    ack = engine.send("lis-oru-to-conneqt", raw)
    assert ack.segment("MSA").value(1) == "CA" and ack.segment("MSA").value(2) == "CL240315-0001"

    delivery = engine.wait_state("CL240315-0001", *SENT_OR_LATER)
    [request] = sent_requests(sandboxes.conneqt, "/api/v1/messages/instant")
    body = request.body
    assert body["messageId"] == expected_message_id(delivery) == delivery.remote_id
    assert body["type"] == "ToolbarInstantMessage"
    assert body["topic"] == "PathologyResult"
    assert body["recipient"] == {"id": {"type": "OcsClientIdentifier", "value": "B86001"}}
    assert body["subject"] == {"id": {"type": "VerifiedNhsNumber", "value": "9434765919"}}
    assert body["body"] == {
        "mimeType": "text/plain",
        "content": "Full blood count report CL24-0315-01 from CITYLAB",
    }
    [attachment] = body["attachments"]
    assert (attachment["mimeType"], attachment["fileName"]) == ("application/pdf", "CL24-0315-01 6.pdf")
    assert base64.b64decode(attachment["content"]) == obx_pdf(raw)
    assert body["codedDataItems"] == [
        {"code": "271026005", "value": 128, "unit": "g/L", "additionalText": "Haemoglobin concentration"},
        {"code": "767002", "value": 11.8, "unit": "10*9/L", "additionalText": "White blood cell count"},
        {"code": "61928009", "value": 262, "unit": "10*9/L", "additionalText": "Platelet count"},
    ]
    assert delivery.remote_id in sandboxes.conneqt.state.messages
    assert SENT in engine.states("CL240315-0001")


def test_discharge_summary_reaches_the_care_team_on_qliq(engine, sandboxes):
    raw = sample("mdm_t02_discharge_summary.hl7")
    ack = engine.send("ehr-mdm-to-qliq", raw)
    assert (ack.segment("MSA").value(1), ack.segment("MSA").value(2)) == ("CA", "EPR-T02-0002")

    delivery = engine.wait_state("EPR-T02-0002", *SENT_OR_LATER)
    [request] = sent_requests(sandboxes.qliq, "/secure_messages/send")
    body = request.body
    assert body["to"] == "469841783"  # WARD7's group
    assert body["subject"] == "Discharge summary DOC-77-0002"
    assert body["priority"] == "urgent"  # TQ1-9 S
    assert body["text"] == (
        "Admitted with community-acquired pneumonia; treated with oral amoxicillin.\n"
        "Follow-up: GP review in 2 weeks & repeat chest X-ray in 6 weeks."
    )
    attachment = body["attachment"]
    assert attachment["content_type"] == "application/pdf"
    assert attachment["file_name"] == "Discharge summary.pdf"  # TXA-16
    assert base64.b64decode(attachment["base64"]) == obx_pdf(raw)
    recorded = sandboxes.qliq.state.messages[delivery.remote_id]
    assert recorded["subject"] == "Discharge summary DOC-77-0002"
    assert recorded["attachment"]["size"] == len(obx_pdf(raw))
    assert SENT in engine.states("EPR-T02-0002")


def test_radiology_report_reaches_referrers_over_medallies(engine, sandboxes):
    raw = sample("oru_r01_radiology_mri.hl7")
    ack = engine.send("ris-oru-to-medallies", raw)
    assert (ack.segment("MSA").value(1), ack.segment("MSA").value(2)) == ("AA", "RAD-20240318-0091")

    delivery = engine.wait_state("RAD-20240318-0091", *SENT_OR_LATER)
    [request] = sent_requests(sandboxes.medallies, "/dirmsg/send_ccda")
    body = request.body
    assert body["messageId"] == f"urn:uuid:{expected_message_id(delivery)}"
    assert body["fromDirectAddress"] == "radiology@direct.courier.example"
    assert body["toDirectAddress"] == (
        "linda.nguyen@direct.mercyclinic.example,samuel.brooks@direct.brooksfamilymed.example"
    )
    assert body["messageSubject"] == "MR lumbar spine without contrast report RAD-55501"
    assert body["messageBody"] == (
        "EXAM: MR lumbar spine without contrast.\n"
        "FINDINGS: Mild degenerative disc disease at L4-L5 without canal stenosis.\n"
        "IMPRESSION: No acute abnormality."
    )
    patient = {k: body[k] for k in body if k.startswith("patient") or k == "assigning_authority"}
    assert patient == {
        "patientId": "22943847",
        "assigning_authority": "2.16.840.1.113883.3.9999",
        "patientFirstname": "PETER",
        "patientMiddlename": "J",
        "patientLastname": "KOWALSKI",
        "patientDOB": "19610704",
        "patientGender": "M",
        "patientAddressStreet1": "328 Chauncey Street",
        "patientAddressStreet2": "Apt 3B",
        "patientAddressCity": "Brooklyn",
        "patientAddressState": "NY",
        "patientAddressZip": "11233",
    }
    assert (body["xdm"], body["asmEnabled"]) == (True, True)
    [attachment] = body["emailAttachmentList"]
    assert attachment["attachmentClass"] == "application/pdf"
    assert attachment["attachmentTitle"] == "MR lumbar spine without contrast report"
    assert attachment["attachmentFileName"] == "RAD-55501-2"
    assert base64.b64decode(attachment["attachmentContent"]) == obx_pdf(raw)
    assert delivery.remote_id == body["messageId"]
    assert body["messageId"] in sandboxes.medallies.state.messages
    assert SENT in engine.states("RAD-20240318-0091")


def test_documents_and_their_replacement_reach_the_kpn_group_chats_in_order(engine, sandboxes):
    first, replacement = sample("mdm_t02_escapes_lf.hl7"), sample("mdm_t10_replacement_content.hl7")
    for raw, control_id in ((first, "EPR-T02-0007"), (replacement, "EPR-T10-0005")):
        ack = engine.send("ehr-mdm-to-kpn", raw)
        assert (ack.segment("MSA").value(1), ack.segment("MSA").value(2)) == ("AA", control_id)

    deliveries = [engine.wait_state(c, SENT) for c in ("EPR-T02-0007", "EPR-T10-0005")]
    posts = sent_requests(sandboxes.kpn, "/attachments")
    assert [r.path for r in posts] == [
        sandboxes.kpn.api_path + "/aux/groupchats/courier-emergency-department/attachments",  # PV1-3.1 ED
        sandboxes.kpn.api_path + "/aux/groupchats/courier-ward-7/attachments",  # PV1-3.1 WARD7
    ]
    recorded = [sandboxes.kpn.state.messages[d.remote_id] for d in deliveries]
    assert recorded[0]["body"] == (
        "Diagnosis: sprain & bruising, left ankle.\nAdvice: rest|ice|elevation (\\RICE\\)."
    )
    assert recorded[1]["body"] == "Replaces DOC-77-0002: antibiotic course extended to 7 days."
    for record, raw, name in (
        (recorded[0], first, "ED discharge.pdf"),
        (recorded[1], replacement, "Discharge summary v2.pdf"),
    ):
        [attachment] = record["attachments"]
        assert (attachment["name"], attachment["mime_type"]) == (name, "application/pdf")
        assert attachment["size"] == len(obx_pdf(raw))
        assert record["chat"] == "groupchats/sandbox-group-1"
    wait_for(lambda: all(SENT in engine.states(c) for c in ("EPR-T02-0007", "EPR-T10-0005")))


#: The shipped samples each example channel takes in and delivers (sample_messages/README.md).
DELIVERED_SAMPLES = {
    "oru_r01_lab_fbc_pdf.hl7": "lis-oru-to-conneqt",
    "oru_r01_lab_two_orders.hl7": "lis-oru-to-conneqt",
    "oru_r01_microbiology_urine.hl7": "lis-oru-to-conneqt",
    "oru_r01_lab_latin1_name.hl7": "lis-oru-to-conneqt",
    "oru_r01_lab_utf8_name.hl7": "lis-oru-to-conneqt",
    "oru_r01_lab_zsegments_v27.hl7": "lis-oru-to-conneqt",
    "oru_r01_radiology_mri.hl7": "ris-oru-to-medallies",
    "mdm_t02_discharge_summary.hl7": "ehr-mdm-to-qliq",
    "mdm_t02_escapes_lf.hl7": "ehr-mdm-to-kpn",
    "mdm_t10_replacement_content.hl7": "ehr-mdm-to-kpn",
}


@pytest.mark.parametrize("name", sorted(DELIVERED_SAMPLES))
def test_every_sample_its_channel_accepts_reaches_the_vendor_once(engine, sandboxes, name):
    channel = DELIVERED_SAMPLES[name]
    ack = engine.send(channel, sample(name))
    assert ack.segment("MSA").value(1) in ("AA", "CA")
    delivery = engine.wait_state(ack.segment("MSA").value(2), *SENT_OR_LATER)
    vendor = {s.name: s for s in sandboxes}[engine.channels[channel].destinations[0].type]
    assert list(vendor.state.messages) == [delivery.remote_id]
    assert all(not s.state.messages for s in sandboxes if s is not vendor)


def test_no_phi_reaches_the_log_on_the_way(engine, sandboxes, caplog):
    """Names, identifiers and message text stay out of the log, delivered or refused, in the
    text format and in JSON lines, which carry the channel, destination and control id."""
    patients = [Message.parse(sample(name)) for name in DELIVERED_SAMPLES]
    identifiers = [p.get("PID-3[2].1") or p.get("PID-3.1") for p in patients]  # NHS number or MRN
    phi = [
        *(p.get("PID-5.1") for p in patients),
        *identifiers,
        "Admitted with community-acquired pneumonia",
        "sprain",
        "Chauncey Street",
    ]
    with caplog.at_level(logging.INFO):
        for name, channel in DELIVERED_SAMPLES.items():
            control_id = engine.send(channel, sample(name)).segment("MSA").value(2)
            engine.wait_state(control_id, *SENT_OR_LATER)
        unknown_ward = set_field(sample("mdm_t02_discharge_summary.hl7"), "PV1", 3, "ICU")
        assert engine.send("ehr-mdm-to-qliq", unknown_ward).segment("MSA").value(1) == "CR"
        sandboxes.kpn.directory.aux_groupchats.pop("courier-emergency-department")  # 404: rejected
        rejected = with_msh(sample("mdm_t02_escapes_lf.hl7"), control_id="EPR-404")
        engine.send("ehr-mdm-to-kpn", rejected)
        engine.wait_state("EPR-404", ERROR)
    assert caplog.records, "the run logged something"
    assert all(phi)
    as_json = [JsonFormatter().format(record) for record in caplog.records]  # --log-format json
    for text in (caplog.text, "\n".join(as_json)):
        leaked = [value for value in phi if value in text]
        assert leaked == []
    refused = [json.loads(line) for line in as_json if '"event": "refused"' in line]
    assert ("ehr-mdm-to-qliq", "EPR-T02-0002") in {(r["channel"], r["control_id"]) for r in refused}
    [dead] = [json.loads(line) for line in as_json if '"control_id": "EPR-404"' in line]
    assert (dead["destination"], dead["event"], dead["level"]) == ("ward-kpn", "rejected", "ERROR")
