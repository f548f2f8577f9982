"""Every vendor pre-flight rule, proven over MLLP: the offending message is refused, not sent.

The example mappings fix many payload fields to constants, so most vendor rules cannot be
reached through them. Here each vendor has a purpose-built mapping (``tests/preflight/<vendor>.toml``)
that reads *every* payload field from the message: the top-level fields from a ``ZPF``
segment (in the mapping's order), attachments from ``OBX`` ED segments, conneQt's coded data
items from ``OBX`` coded in SNOMED CT. A case is the vendor's valid base message with one edit;
it must come back AR (CR in enhanced mode) with ERR-3 the table-0357 code, ERR-2 the HL7
location of the offending value (when it comes from one field), ERR-8 naming the destination
and the payload key but no value, nothing in the store and nothing at the vendor's sandbox.
The base messages themselves (and the SMS and non-Qliq variants) are accepted and reach the
sandbox, so no case can pass because the base was already wrong.

Not reachable over MLLP, so not here: 207 for a payload key the destination does not know and
102 for a list field that is not a list (``courier check`` refuses such a mapping at load).
"""

from __future__ import annotations

import base64
import re
import time
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from courier_sandbox import Sandboxes
from courier_sandbox.recording import RecordedRequest
from tests.conftest import on_reactor
from tests.support import e2e
from tests.support.e2e import RunningEngine, load_against_sandboxes, reset_sandboxes, wait_for
from tests.support.engine import open_store
from tests.support.subprocess_engine import free_port

sandboxes = e2e.sandboxes  # module-scoped fixture: the four vendor sandboxes on free ports

PREFLIGHT = Path(__file__).parent / "preflight"
PDF = base64.b64encode(b"%PDF-1.4\n% pre-flight test document\n%%EOF\n").decode("ascii")
PATIENT_NAME = ("ZEBEDEE", "QUINTANILLA")  # PID-5: must never reach ERR-8
#: How long a refused message gets to show up at the sandbox anyway (it must not).
NOTHING_SENT_WAIT_S = 0.1
#: The request each vendor's send makes (token grants and status polls are not sends).
SEND_PATHS = {
    "qliq": re.compile(r"/secure_messages/send$"),
    "conneqt": re.compile(r"/api/v1/messages/instant$"),
    "medallies": re.compile(r"/dirmsg/send_ccda$"),
    "kpn": re.compile(r"/(messages|attachments)$"),
}


@dataclass(frozen=True)
class Attachment:
    """One ``OBX|n|ED|file name^title||^MIME type^PDF^Base64^content``."""

    file_name: str = "Result.pdf"
    mime_type: str = "application/pdf"
    content: str = PDF
    title: str = "Laboratory report"

    def obx(self, set_id: int) -> str:
        return f"OBX|{set_id}|ED|{self.file_name}^{self.title}||^{self.mime_type}^PDF^Base64^{self.content}"


@dataclass(frozen=True)
class CodedItem:
    """One ``OBX|n|NM|SNOMED CT code^text^SCT||value|unit``."""

    code: str = "271649006"
    value: str = "140"
    unit: str = "mm[Hg]"
    text: str = "Systolic blood pressure"

    def obx(self, set_id: int) -> str:
        return f"OBX|{set_id}|NM|{self.code}^{self.text}^SCT||{self.value}|{self.unit}"


@dataclass(frozen=True)
class Draft:
    """A test message before it is written: ZPF values by payload key, and the OBX items."""

    zpf: Mapping[str, str]
    attachments: tuple[Attachment, ...] = (Attachment(),)
    coded: tuple[CodedItem, ...] = ()

    def edited(self, edit: Edit) -> Draft:
        attachments = self.attachments if edit.attachments is None else edit.attachments
        if edit.attachment:
            attachments = (replace(attachments[0], **edit.attachment), *attachments[1:])
        coded = self.coded
        if edit.coded:
            coded = (replace(coded[0], **edit.coded), *coded[1:])
        return Draft({**self.zpf, **edit.zpf}, attachments, coded)

    def render(self, vendor: str, control_id: str, *, enhanced: bool = False) -> bytes:
        layout = zpf_layout(vendor)
        zpf = [""] * max(layout.values())
        for key, value in self.zpf.items():
            zpf[layout[key] - 1] = value
        ack_types = "|||AL|NE" if enhanced else ""
        segments = [
            f"MSH|^~\\&|PREFLIGHT|CITY HOSPITAL|COURIER|COURIER|20260101120000||ORU^R01^ORU_R01"
            f"|{control_id}|P|2.5.1{ack_types}",
            f"PID|1||4711^^^HOSP^MR||{'^'.join(PATIENT_NAME)}||19610203|F",
            "OBR|1|ORD-1|FIL-1|11502-2^Laboratory report^LN|||20260101110000",
            "ZPF|" + "|".join(zpf),
        ]
        items = [*self.attachments, *self.coded]
        segments += [item.obx(set_id) for set_id, item in enumerate(items, start=1)]
        return "\r".join(segments).encode("utf-8")


@dataclass(frozen=True)
class Edit:
    """What one case changes in the base message."""

    zpf: Mapping[str, str] = field(default_factory=dict)
    attachment: Mapping[str, str] = field(default_factory=dict)  # fields of the first one
    attachments: tuple[Attachment, ...] | None = None  # the whole list, replaced
    coded: Mapping[str, str] = field(default_factory=dict)  # fields of the first coded item

    def values(self) -> list[str]:
        """The values this edit puts in the message: none may be echoed in ERR-8."""
        return [v for part in (self.zpf, self.attachment, self.coded) for v in part.values()]


def zpf_layout(vendor: str) -> dict[str, int]:
    """Payload key → ZPF field number, as the vendor's test mapping declares it."""
    fields = tomllib.loads((PREFLIGHT / f"{vendor}.toml").read_text(encoding="utf-8"))["fields"]
    return {key: int(path.removeprefix("ZPF-")) for key, path in fields.items()}


QLIQ_GROUP = "469841783"
MOBILE = "+447700900123"
BASES = {
    "qliq": Draft(
        {
            "to": QLIQ_GROUP,
            "from": "courier@sandbox.qliq",
            "subject": "Lab report",
            "priority": "asap",
            "text": "A new laboratory report is available.",
        }
    ),
    "conneqt": Draft(
        {
            "topic": "PathologyResult",
            "recipientId": "B86001",
            "recipientIdType": "OcsClientIdentifier",
            "nhsNumber": "9434765919",
            "expiryDateTime": "2099-01-01T00:00:00Z",
            "bodyContent": "Full blood count report",
            "bodyMimeType": "text/plain",
        },
        coded=(CodedItem(),),
    ),
    "medallies": Draft(
        {
            "toDirectAddress": "smith@direct.example.org,jones@direct.example.org",
            "messageSubject": "Radiology report",
            "messageBody": "Please find the report attached.",
            "replyToMessageId": "urn:uuid:5b0c2f4e-8d1a-5c7e-9f3b-6a2d4e8c1b70",
            "xdm": "false",
            "xdmFileName": "report_package",
            "asmEnabled": "true",
            "patientId": "4711",
            "assigning_authority": "2.16.840.1.113883.3.72.5.9.1",
            "patientIdType": "MR",
            "patientFirstname": "Pat",
            "patientMiddlename": "Q",
            "patientLastname": "Preflight",
            "patientDOB": "19610203",
            "patientGender": "F",
            "patientAddressStreet1": "1 Main Street",
            "patientAddressStreet2": "Flat 2",
            "patientAddressCity": "Springfield",
            "patientAddressState": "IL",
            "patientAddressZip": "62701",
            "patient_summary": "Outpatient",
            "loincName": "CT Chest",
            "loincValue": "24627-2",
            "authorPerson": "Dr Ray",
            "authorInstitution": "City Radiology",
        },
        attachments=(Attachment(file_name="report"),),
    ),
    "kpn": Draft(
        {"chat_type": "groupchat", "aux_id": "ward-7", "body": "A new laboratory report is available."}
    ),
}
#: Valid variants that put a base in another mode the rules distinguish.
VARIANTS = {
    "qliq SMS": (
        "qliq",
        Edit(
            zpf={"to": MOBILE, "no_phi": "true", "reply_posting_url": "https://replies.example.org/qliq"},
            attachments=(),
        ),
    ),
    "qliq non-Qliq user": (
        "qliq",
        Edit(zpf={"to": MOBILE, "send_non_qliq_user": "true", "expiry_in_minutes": "60"}),
    ),
    "kpn by chat id": ("kpn", Edit(zpf={"aux_id": "", "chat_id": "sandbox-group-1"})),
}

SMS = {"to": MOBILE, "no_phi": "true"}
NON_QLIQ = {"to": MOBILE, "send_non_qliq_user": "true"}
ZPF = "ZPF^1^{}^1".format
OBX_FILE_NAME, OBX_TITLE, OBX_MIME, OBX_CONTENT = "OBX^1^3^1^1", "OBX^1^3^1^2", "OBX^1^5^1^2", "OBX^1^5^1^5"
ELEVEN_PDFS = tuple(Attachment(file_name=f"Result {n}.pdf") for n in range(11))
FIVE_MB_AND_A_BYTE = base64.b64encode(bytes(5_000_001)).decode("ascii")


@dataclass(frozen=True)
class Case:
    """One rule broken: the edit, then ERR-3, ERR-2 (None: no single field) and the payload
    key ERR-8 must name."""

    vendor: str
    edit: Edit
    code: str
    location: str | None
    key: str


CASES = {
    # -- Qliq ---------------------------------------------------------------------------------
    "qliq: to missing": Case("qliq", Edit(zpf={"to": ""}), "101", ZPF(1), "to"),
    "qliq: to neither e-mail nor QliqID": Case("qliq", Edit(zpf={"to": "care team"}), "102", ZPF(1), "to"),
    "qliq: to a mobile number without SMS or non-Qliq": Case(
        "qliq", Edit(zpf={"to": MOBILE}), "102", ZPF(1), "to"
    ),
    "qliq: SMS to an e-mail": Case(
        "qliq", Edit(zpf={**SMS, "to": "oncall@sandbox.qliq"}, attachments=()), "102", ZPF(1), "to"
    ),
    "qliq: SMS to a QliqID (too short for a mobile)": Case(
        "qliq", Edit(zpf={**SMS, "to": QLIQ_GROUP}, attachments=()), "102", ZPF(1), "to"
    ),
    "qliq: non-Qliq to an e-mail": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "to": "oncall@sandbox.qliq"}), "102", ZPF(1), "to"
    ),
    "qliq: from not an e-mail": Case("qliq", Edit(zpf={"from": "courier"}), "102", ZPF(2), "from"),
    "qliq: priority not fyi/asap/urgent": Case(
        "qliq", Edit(zpf={"priority": "stat"}), "103", ZPF(4), "priority"
    ),
    "qliq: text missing": Case("qliq", Edit(zpf={"text": ""}), "101", ZPF(5), "text"),
    "qliq: no_phi not a boolean": Case(
        "qliq", Edit(zpf={**SMS, "no_phi": "yes"}, attachments=()), "102", ZPF(6), "no_phi"
    ),
    "qliq: SMS with no_phi false": Case(
        "qliq", Edit(zpf={**SMS, "no_phi": "false"}, attachments=()), "103", ZPF(6), "no_phi"
    ),
    "qliq: SMS with an attachment": Case("qliq", Edit(zpf=SMS), "102", None, "attachments"),
    "qliq: both SMS and non-Qliq": Case(
        "qliq",
        Edit(zpf={**SMS, "send_non_qliq_user": "true"}, attachments=()),
        "102",
        ZPF(8),
        "send_non_qliq_user",
    ),
    "qliq: send_non_qliq_user not a boolean": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "send_non_qliq_user": "yes"}), "102", ZPF(8), "send_non_qliq_user"
    ),
    "qliq: send_non_qliq_user false": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "send_non_qliq_user": "false"}), "103", ZPF(8), "send_non_qliq_user"
    ),
    "qliq: expiry_in_minutes without non-Qliq": Case(
        "qliq", Edit(zpf={"expiry_in_minutes": "60"}), "102", ZPF(9), "expiry_in_minutes"
    ),
    "qliq: expiry_in_minutes over 7 days": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "expiry_in_minutes": "10081"}), "102", ZPF(9), "expiry_in_minutes"
    ),
    "qliq: expiry_in_minutes under a minute": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "expiry_in_minutes": "0"}), "102", ZPF(9), "expiry_in_minutes"
    ),
    "qliq: expiry_in_minutes not whole minutes": Case(
        "qliq", Edit(zpf={**NON_QLIQ, "expiry_in_minutes": "90.5"}), "102", ZPF(9), "expiry_in_minutes"
    ),
    "qliq: reply_posting_url without SMS": Case(
        "qliq",
        Edit(zpf={"reply_posting_url": "https://replies.example.org/qliq"}),
        "102",
        ZPF(7),
        "reply_posting_url",
    ),
    "qliq: attachment type missing": Case(
        "qliq", Edit(attachment={"mime_type": ""}), "101", OBX_MIME, "attachments[0].content_type"
    ),
    "qliq: attachment type not allowed": Case(
        "qliq", Edit(attachment={"mime_type": "text/html"}), "103", OBX_MIME, "attachments[0].content_type"
    ),
    "qliq: attachment file name missing": Case(
        "qliq", Edit(attachment={"file_name": ""}), "101", OBX_FILE_NAME, "attachments[0].file_name"
    ),
    "qliq: attachment content missing": Case(
        "qliq", Edit(attachment={"content": ""}), "101", OBX_CONTENT, "attachments[0].base64"
    ),
    "qliq: attachment not Base64": Case(
        "qliq", Edit(attachment={"content": "*" + PDF}), "102", OBX_CONTENT, "attachments[0].base64"
    ),
    # -- conneQt ------------------------------------------------------------------------------
    "conneqt: topic missing": Case("conneqt", Edit(zpf={"topic": ""}), "101", ZPF(1), "topic"),
    "conneqt: recipientId missing": Case(
        "conneqt", Edit(zpf={"recipientId": ""}), "101", ZPF(2), "recipientId"
    ),
    "conneqt: recipientId not an ODS code": Case(
        "conneqt", Edit(zpf={"recipientId": "b86001"}), "102", ZPF(2), "recipientId"
    ),
    "conneqt: recipientId too long for an ODS code": Case(
        "conneqt", Edit(zpf={"recipientId": "B860011234567"}), "102", ZPF(2), "recipientId"
    ),
    "conneqt: recipientIdType not allowed": Case(
        "conneqt", Edit(zpf={"recipientIdType": "NhsNumber"}), "103", ZPF(3), "recipientIdType"
    ),
    "conneqt: nhsNumber missing": Case("conneqt", Edit(zpf={"nhsNumber": ""}), "101", ZPF(4), "nhsNumber"),
    "conneqt: nhsNumber not 10 digits": Case(
        "conneqt", Edit(zpf={"nhsNumber": "943 476 5919"}), "102", ZPF(4), "nhsNumber"
    ),
    "conneqt: nhsNumber modulus 11 check digit wrong": Case(
        "conneqt", Edit(zpf={"nhsNumber": "9434765918"}), "102", ZPF(4), "nhsNumber"
    ),
    "conneqt: nhsNumber with check digit 10 (never issued)": Case(
        "conneqt", Edit(zpf={"nhsNumber": "9434765960"}), "102", ZPF(4), "nhsNumber"
    ),
    "conneqt: expiryDateTime without an offset": Case(
        "conneqt", Edit(zpf={"expiryDateTime": "2099-01-01T00:00:00"}), "102", ZPF(5), "expiryDateTime"
    ),
    "conneqt: expiryDateTime not a date-time": Case(
        "conneqt", Edit(zpf={"expiryDateTime": "20990101"}), "102", ZPF(5), "expiryDateTime"
    ),
    "conneqt: expiryDateTime in the past": Case(
        "conneqt", Edit(zpf={"expiryDateTime": "2020-01-01T00:00:00+01:00"}), "102", ZPF(5), "expiryDateTime"
    ),
    "conneqt: bodyMimeType not allowed": Case(
        "conneqt", Edit(zpf={"bodyMimeType": "text/rtf"}), "103", ZPF(7), "bodyMimeType"
    ),
    "conneqt: attachments missing": Case("conneqt", Edit(attachments=()), "101", None, "attachments"),
    "conneqt: more than 10 attachments": Case(
        "conneqt", Edit(attachments=ELEVEN_PDFS), "102", None, "attachments"
    ),
    "conneqt: attachment mimeType missing": Case(
        "conneqt", Edit(attachment={"mime_type": ""}), "101", OBX_MIME, "attachments[0].mimeType"
    ),
    "conneqt: attachment mimeType not permitted": Case(
        "conneqt", Edit(attachment={"mime_type": "image/png"}), "103", OBX_MIME, "attachments[0].mimeType"
    ),
    "conneqt: fileName missing": Case(
        "conneqt", Edit(attachment={"file_name": ""}), "101", OBX_FILE_NAME, "attachments[0].fileName"
    ),
    **{
        f"conneqt: fileName {why}": Case(
            "conneqt", Edit(attachment={"file_name": name}), "102", OBX_FILE_NAME, "attachments[0].fileName"
        )
        for why, name in {
            "with a leading space": " Result.pdf",
            "with a trailing space": "Result.pdf ",
            "with a leading period": ".Result.pdf",
            "with a trailing period": "Result.pdf.",
            "a reserved device name": "CON.pdf",
            "a reserved device name, numbered": "lpt1.pdf",
            "with a colon": "Result:1.pdf",
            "with a question mark": "Result?.pdf",
            "with an asterisk": "Result*.pdf",
            "with a slash": "2026/Result.pdf",
            "longer than 255 characters": "R" * 252 + ".pdf",
        }.items()
    },
    "conneqt: attachment content missing": Case(
        "conneqt", Edit(attachment={"content": ""}), "101", OBX_CONTENT, "attachments[0].content"
    ),
    "conneqt: attachment content not Base64": Case(
        "conneqt", Edit(attachment={"content": PDF[:-2]}), "102", OBX_CONTENT, "attachments[0].content"
    ),
    "conneqt: attachment larger than 5 MB decoded": Case(
        "conneqt",
        Edit(attachment={"content": FIVE_MB_AND_A_BYTE}),
        "104",
        OBX_CONTENT,
        "attachments[0].content",
    ),
    "conneqt: coded item code missing": Case(
        "conneqt", Edit(coded={"code": ""}), "101", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item code not digits": Case(
        "conneqt", Edit(coded={"code": "BP-SYS"}), "102", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item code with a leading zero": Case(
        "conneqt", Edit(coded={"code": "0271649006"}), "102", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item code failing Verhoeff": Case(
        "conneqt", Edit(coded={"code": "271649007"}), "102", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item code a description id (partition 01)": Case(
        "conneqt", Edit(coded={"code": "100000016"}), "102", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item code with an unknown partition": Case(
        "conneqt", Edit(coded={"code": "12345678"}), "102", "OBX^2^3^1^1", "codedDataItems[0].code"
    ),
    "conneqt: coded item value not a number": Case(
        "conneqt", Edit(coded={"value": "high"}), "102", "OBX^2^5^1", "codedDataItems[0].value"
    ),
    # -- MedAllies ----------------------------------------------------------------------------
    "medallies: toDirectAddress missing": Case(
        "medallies", Edit(zpf={"toDirectAddress": ""}), "101", ZPF(1), "toDirectAddress"
    ),
    "medallies: toDirectAddress not a Direct address": Case(
        "medallies", Edit(zpf={"toDirectAddress": "Dr Smith"}), "102", ZPF(1), "toDirectAddress"
    ),
    "medallies: one of several Direct addresses wrong": Case(
        "medallies",
        Edit(zpf={"toDirectAddress": "smith@direct.example.org, jones@"}),
        "102",
        ZPF(1),
        "toDirectAddress",
    ),
    "medallies: xdm not a boolean": Case("medallies", Edit(zpf={"xdm": "zip"}), "102", ZPF(5), "xdm"),
    "medallies: xdmFileName with an extension": Case(
        "medallies", Edit(zpf={"xdmFileName": "report_package.zip"}), "102", ZPF(6), "xdmFileName"
    ),
    "medallies: asmEnabled not a boolean": Case(
        "medallies", Edit(zpf={"asmEnabled": "Y"}), "102", ZPF(7), "asmEnabled"
    ),
    "medallies: assigning_authority not an OID": Case(
        "medallies", Edit(zpf={"assigning_authority": "HOSP"}), "102", ZPF(9), "assigning_authority"
    ),
    "medallies: patientDOB with dashes": Case(
        "medallies", Edit(zpf={"patientDOB": "1961-02-03"}), "102", ZPF(14), "patientDOB"
    ),
    "medallies: patientDOB not a calendar date": Case(
        "medallies", Edit(zpf={"patientDOB": "19610230"}), "102", ZPF(14), "patientDOB"
    ),
    "medallies: patientGender not in table 0001": Case(
        "medallies", Edit(zpf={"patientGender": "X"}), "103", ZPF(15), "patientGender"
    ),
    "medallies: attachments missing": Case(
        "medallies", Edit(attachments=()), "101", None, "emailAttachmentList"
    ),
    "medallies: attachmentClass missing": Case(
        "medallies",
        Edit(attachment={"mime_type": ""}),
        "101",
        OBX_MIME,
        "emailAttachmentList[0].attachmentClass",
    ),
    "medallies: attachmentClass not a media type": Case(
        "medallies",
        Edit(attachment={"mime_type": "PDF document"}),
        "102",
        OBX_MIME,
        "emailAttachmentList[0].attachmentClass",
    ),
    "medallies: attachmentContent missing": Case(
        "medallies",
        Edit(attachment={"content": ""}),
        "101",
        OBX_CONTENT,
        "emailAttachmentList[0].attachmentContent",
    ),
    "medallies: attachmentContent not Base64": Case(
        "medallies",
        Edit(attachment={"content": PDF + "!"}),
        "102",
        OBX_CONTENT,
        "emailAttachmentList[0].attachmentContent",
    ),
    "medallies: attachmentTitle missing": Case(
        "medallies",
        Edit(attachment={"title": ""}),
        "101",
        OBX_TITLE,
        "emailAttachmentList[0].attachmentTitle",
    ),
    "medallies: attachmentFileName with an extension": Case(
        "medallies",
        Edit(attachment={"file_name": "report.pdf"}),
        "102",
        OBX_FILE_NAME,
        "emailAttachmentList[0].attachmentFileName",
    ),
    # -- KPN ----------------------------------------------------------------------------------
    "kpn: chat_type missing": Case("kpn", Edit(zpf={"chat_type": ""}), "101", ZPF(1), "chat_type"),
    "kpn: chat_type not allowed": Case("kpn", Edit(zpf={"chat_type": "channel"}), "103", ZPF(1), "chat_type"),
    "kpn: neither chat_id nor aux_id": Case("kpn", Edit(zpf={"aux_id": ""}), "101", ZPF(2), "chat_id"),
    "kpn: both chat_id and aux_id": Case(
        "kpn", Edit(zpf={"chat_id": "sandbox-group-1"}), "102", ZPF(3), "aux_id"
    ),
    "kpn: body missing": Case("kpn", Edit(zpf={"body": ""}), "101", ZPF(4), "body"),
    "kpn: attachment file_name missing": Case(
        "kpn", Edit(attachment={"file_name": ""}), "101", OBX_FILE_NAME, "attachments[0].file_name"
    ),
    "kpn: attachment mime_type missing": Case(
        "kpn", Edit(attachment={"mime_type": ""}), "101", OBX_MIME, "attachments[0].mime_type"
    ),
    "kpn: attachment content missing": Case(
        "kpn", Edit(attachment={"content": ""}), "101", OBX_CONTENT, "attachments[0].content"
    ),
    "kpn: attachment content not Base64": Case(
        "kpn", Edit(attachment={"content": "%PDF-1.4"}), "102", OBX_CONTENT, "attachments[0].content"
    ),
    "kpn: attachment content decodes to nothing": Case(
        "kpn", Edit(attachment={"content": " "}), "102", OBX_CONTENT, "attachments[0].content"
    ),
}


@pytest.fixture(scope="module")
def engine(reactor, sandboxes: Sandboxes, tmp_path_factory) -> Iterator[RunningEngine]:
    """One engine with the four pre-flight channels, a real SQLite store, the sandboxes."""
    reset_sandboxes(sandboxes)
    env = {"KPN_REDIRECT_URI": f"http://127.0.0.1:{free_port()}/callback"}
    channels = load_against_sandboxes([PREFLIGHT / "channels"], sandboxes, env)
    store = open_store(reactor, tmp_path_factory.mktemp("preflight") / "courier.sqlite3")
    running = RunningEngine(reactor, sandboxes, store, channels)
    yield running
    running.stop()
    on_reactor(store.close)


def sends(sandboxes: Sandboxes, vendor: str) -> list[RecordedRequest]:
    """The send requests the vendor's sandbox has received."""
    sandbox = getattr(sandboxes, vendor)
    return [r for r in list(sandbox.state.requests) if SEND_PATHS[vendor].search(r.path)]


@pytest.mark.parametrize("name", [*BASES, *VARIANTS])
def test_the_valid_base_message_is_accepted_and_reaches_the_sandbox(engine, sandboxes, name):
    vendor, edit = VARIANTS.get(name, (name, Edit()))
    control_id = f"BASE-{name.replace(' ', '-')}"
    before = len(sends(sandboxes, vendor))

    ack = engine.send(f"preflight-{vendor}", BASES[vendor].edited(edit).render(vendor, control_id))

    assert ack.segment("MSA").value(1) == "AA", ack.text
    assert on_reactor(engine.store.get_message, control_id) is not None
    wait_for(lambda: len(sends(sandboxes, vendor)) > before, 5.0, f"{name} at the sandbox")
    assert engine.wait_state(control_id, "SENT").state == "SENT"


@pytest.mark.parametrize("name", list(CASES))
def test_a_message_breaking_one_rule_is_refused_with_a_useful_err_and_nothing_is_sent(
    engine, sandboxes, name
):
    case = CASES[name]
    control_id = f"PF-{list(CASES).index(name)}"
    before = len(sends(sandboxes, case.vendor))

    raw = BASES[case.vendor].edited(case.edit).render(case.vendor, control_id)
    ack = engine.send(f"preflight-{case.vendor}", raw)

    msa = ack.segment("MSA")
    assert (msa.value(1), msa.value(2)) == ("AR", control_id), ack.text
    [err] = ack.all("ERR")
    assert (err.value(3, component=1), err.value(3, component=3)) == (case.code, "HL70357"), ack.text
    assert err.field(2) == (case.location or ""), ack.text
    assert err.value(4) == "E"
    text = err.value(8)
    assert text.startswith(f"preflight-{case.vendor}: ") and case.key in text, text
    for value in [*case.edit.values(), *PATIENT_NAME]:
        assert len(value) < 3 or value not in text, f"ERR-8 echoes a value: {text}"
    assert on_reactor(engine.store.get_message, control_id) is None
    time.sleep(NOTHING_SENT_WAIT_S)
    assert len(sends(sandboxes, case.vendor)) == before


def test_enhanced_mode_refuses_with_cr(engine):
    """A sender that asked for enhanced acknowledgements gets the refusal as a commit reject."""
    edit = Edit(zpf={"nhsNumber": "9434765918"})
    raw = BASES["conneqt"].edited(edit).render("conneqt", "PF-ENHANCED", enhanced=True)

    ack = engine.send("preflight-conneqt", raw)

    assert ack.segment("MSA").value(1) == "CR", ack.text
    [err] = ack.all("ERR")
    assert (err.value(3, component=1), err.field(2)) == ("102", "ZPF^1^4^1")
    assert on_reactor(engine.store.get_message, "PF-ENHANCED") is None
