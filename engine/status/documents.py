"""Messages from clinicians outside (Qliq replies, inbound Direct messages) as HL7 MDM^T02.

MDM^T02 ("original document notification and content") is what an EHR already files as a
document against a patient, so a receiving engine needs no custom code. One layout for both
vendors::

    MSH|^~\\&|COURIER|<vendor>|<MSH-3>|<MSH-4>|<now>||MDM^T02^MDM_T02|<id>|P|2.5.1|||AL|NE
    EVN|T02|<now>
    PID|...                      copied from the hospital message answered, else built from the
                                 vendor's patient fields (MedAllies), else PID|1
    PV1|1|U                      copied from the answered message when it has one
    TXA|1|<type>|TX|<received>||||||||<vendor message id>|<answered MSH-10>|||||DO||AV
    OBX|1|TX|TEXT^Message text^L||<text, line breaks as \\.br\\>||||||F
    OBX|2|ED|ATTACHMENT^<file name or title>^L|1|^<ED-2>^<ED-3>^Base64^<data>||||||F
    ZIN|<vendor>|<vendor message id>|<conversation id>|<from>|<answered MSH-10>|<received>|<route>

- TXA-12 is the vendor's message id; TXA-13 (parent document) is the MSH-10 of the hospital
  message this answers, when there is one (Qliq replies). TXA-17 is DO (documented): the
  text is complete but nobody in the hospital has authenticated it.
- ED components follow the reference §5.8: ED-2 type of data (table 0191: AP, IM, TEXT),
  ED-3 subtype from the media type (PDF, JPEG, PNG, XML, ...), ED-4 ``Base64``.
- MSH-15 AL / MSH-16 NE, as for status messages: the hospital answers with a commit ACK.
- Without an answered message the text is UTF-8 and MSH-18 says ``UNICODE UTF-8``; with one,
  its character set is kept (characters it cannot hold become ``?``).
- ``ZIN`` (Courier inbound) keeps the vendor's references: ZIN-1 vendor, ZIN-2 vendor
  message id, ZIN-3 conversation id (Qliq) or replied-to message id (Direct), ZIN-4 sender
  (e-mail or Direct address), ZIN-5 the answered MSH-10, ZIN-6 when the vendor received it,
  ZIN-7 the route it came in by (``medallies/<channel>/<destination>/inbound``,
  ``qliq/<channel>/<destination>/replies`` or ``.../get_replies`` for a poll; never a token).

MSH-3 ``COURIER`` and MSH-4 the vendor mark every such message as coming from outside the
hospital, through Courier; each one is logged with its route and source address
(:func:`log_queued`), never with its content.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from datetime import datetime

from engine.message import Message, Segment, escape
from engine.message.delimiters import DEFAULT_DELIMITERS, Delimiters
from engine.status.messages import hl7_time

log = logging.getLogger(__name__)

DOCUMENT_SEGMENT = "ZIN"
_TYPE_OF_DATA = {"image": "IM", "text": "TEXT"}  # else AP (application data)


@dataclass(frozen=True)
class Attachment:
    media_type: str
    data: bytes = field(repr=False)
    name: str = field(default="", repr=False)


@dataclass(frozen=True)
class Patient:
    """The vendor's patient fields (MedAllies sends the HL7 v2.5 identifier logic)."""

    id: str = ""
    assigning_authority: str = ""
    family: str = ""
    given: str = ""
    middle: str = ""
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True)
class Origin:
    """How a document reached Courier: ``route`` (a webhook's URL path without its secret, or
    a poll) and ``source`` (the caller's IP address, or the host polled)."""

    route: str
    source: str


@dataclass(frozen=True)
class InboundDocument:
    """What a clinician outside sent; text, names and files are PHI and stay out of ``repr``."""

    vendor: str
    vendor_message_id: str
    received_at: float
    origin: Origin
    sender: str = field(default="", repr=False)
    text: str = field(default="", repr=False)
    attachments: tuple[Attachment, ...] = ()
    conversation_id: str = ""
    answers_control_id: str = ""
    document_type: str = "CN"  # table 0270: consultation; MedAllies uses CD (clinical document)
    patient: Patient | None = field(default=None, repr=False)


def build_document_message(
    document: InboundDocument, *, control_id: str, now: datetime, answers: Message | None = None
) -> bytes:
    """The MDM^T02 for ``document``; with ``answers`` (the hospital message it replies to) its
    delimiters, version, character set, addressing, PID and PV1 are reused."""
    d = answers.delimiters if answers else DEFAULT_DELIMITERS
    stamp = now.strftime("%Y%m%d%H%M%S%z")
    received = hl7_time(document.received_at)

    def segment(name: str, *values: str) -> str:
        return d.field.join([name, *values]).rstrip(d.field)

    def text(value: str) -> str:
        return escape(value, d)

    msh = answers.msh if answers else None
    header = d.field.join(
        [
            "MSH",
            d.encoding_characters,
            "COURIER",
            text(document.vendor),
            msh.field(3) if msh else "",
            msh.field(4) if msh else "",
            stamp,
            "",
            d.component.join(["MDM", "T02", "MDM_T02"]),
            text(control_id),
            msh.field(11) if msh else "P",
            msh.field(12) if msh else "2.5.1",
            "",
            "",
            "AL",
            "NE",
            "",
            msh.field(18) if msh else "UNICODE UTF-8",
        ]
    ).rstrip(d.field)
    segments = [header, segment("EVN", "T02", stamp), *_patient_and_visit(document, answers, d)]
    segments.append(
        segment(
            "TXA",
            "1",
            document.document_type,
            "TX",
            received,
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            text(document.vendor_message_id),
            text(document.answers_control_id),
            "",
            "",
            "",
            "DO",
            "",
            "AV",
        )
    )
    segments.append(
        segment(
            "OBX",
            "1",
            "TX",
            d.component.join(["TEXT", "Message text", "L"]),
            "",
            text(document.text),
            "",
            "",
            "",
            "",
            "",
            "F",
        )
    )
    for n, attachment in enumerate(document.attachments, start=1):
        label = d.component.join(["ATTACHMENT", text(attachment.name or "Attachment"), "L"])
        segments.append(
            segment("OBX", str(n + 1), "ED", label, str(n), _ed(attachment, d), "", "", "", "", "", "F")
        )
    segments.append(
        segment(
            DOCUMENT_SEGMENT,
            text(document.vendor),
            text(document.vendor_message_id),
            text(document.conversation_id),
            text(document.sender),
            text(document.answers_control_id),
            received,
            text(document.origin.route),
        )
    )
    charset = answers.charset if answers else "utf-8"
    return "".join(s + "\r" for s in segments).encode(charset, errors="replace")


def log_queued(document: InboundDocument, control_id: str) -> None:
    """The one line every document from outside leaves: vendor id, route, source, our MSH-10."""
    log.info(
        "%s message %s via %s from %s: queued for the hospital as %s",
        document.vendor,
        document.vendor_message_id,
        document.origin.route,
        document.origin.source,
        control_id,
    )


def _patient_and_visit(document: InboundDocument, answers: Message | None, d: Delimiters) -> list[str]:
    unknown_visit = d.field.join(["PV1", "1", "U"])
    if answers is not None and answers.segment("PID") is not None:
        visit = answers.segment("PV1")
        return [_copy(answers.segment("PID"), d), _copy(visit, d) if visit else unknown_visit]
    p = document.patient or Patient()
    identifier = ""
    if p.id:
        authority = ""
        if p.assigning_authority:
            authority = d.subcomponent.join(["", escape(p.assigning_authority, d), "ISO"])
        identifier = d.component.join([escape(p.id, d), "", "", authority])
    name = d.component.join(escape(part, d) for part in (p.family, p.given, p.middle)).rstrip(d.component)
    pid = d.field.join(["PID", "1", "", identifier, "", name, "", escape(p.birth_date, d), escape(p.sex, d)])
    return [pid.rstrip(d.field), unknown_visit]


def _ed(attachment: Attachment, d: Delimiters) -> str:
    """OBX-5 as ED: ^type of data^subtype^Base64^data (ED-1 source application left empty)."""
    major, _, minor = attachment.media_type.lower().partition("/")
    subtype = minor.split(";")[0].removeprefix("x-").upper() or "OCTET-STREAM"
    data = base64.b64encode(attachment.data).decode("ascii")
    kind = _TYPE_OF_DATA.get(major, "AP")
    return d.component.join(["", kind, escape(subtype, d), "Base64", escape(data, d)])


def _copy(segment: Segment, d: Delimiters) -> str:
    """A segment of the answered message, field for field (still escaped)."""
    return d.field.join([segment.name, *(segment.field(n) for n in range(1, len(segment) + 1))])
