"""MedAllies Direct: encrypted Direct messages through the MedAllies HISP.

``POST /dirmsg/send_ccda`` with HTTP Basic auth; the HISP answers synchronously with a
``status`` and a ``transactionId``, and later delivery states come from ``GET /dirmsg/status``
(or the DSN webhook, handled elsewhere). 429 and 503 are retried like every transient answer.

Conflicts in the vendor document, and how they are resolved here:

* The status URL is printed without the ``:9443`` port the send URL has. Which one is a typo
  cannot be told from the document, so the status query has its own ``status_base_url``,
  by default the document's form: ``base_url`` without ``:9443``.
* ``attachmentClass`` is listed as optional, yet each document must be "described by the MIME
  type (attachmentClass) and a title". We require both: the receiving EHR needs them.
* ``fromDirectAddress`` is the sending edge's own address, tied to the credentials, so it is
  a setting of the destination rather than a mapped field; status queries need it too.
* Older responses wrap the answer as ``{"status": "OK"|"Error", "result": ...}``; a 2xx whose
  ``status`` is ``Error`` or ``FAILED`` is treated as a rejection with ``result`` as reason.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from engine.destinations import rules
from engine.destinations.base import (
    DestinationError,
    Outcome,
    Problem,
    SendResult,
    StatusUpdate,
    message_uuid,
)
from engine.destinations.payload import DATA_TYPE, TABLE_VALUE, as_bool, check_payload, is_blank
from engine.destinations.transport import HttpDestination, get_ci, http_settings_spec, json_body
from engine.destinations.webhook_settings import webhook_fields
from engine.spec import Spec, boolean, objects, string

SEND_PATH = "/dirmsg/send_ccda"
STATUS_PATH = "/dirmsg/status"
SEND_PORT = 9443  # in the document's send URL, not in its status URL
INBOUND_MAX_BODY_BYTES = 8 * 1024 * 1024
"""The document sets no size for inbound Direct messages; 8 MiB of JSON holds about 6 MB of
Base64 attachments, the scanned letters and C-CDA documents Direct carries."""
DSN_MAX_BODY_BYTES = 64 * 1024  # five short JSON fields
#: HL7 table 0001 (administrative sex), which patientGender follows like the other
#: patient fields ("the logic of the HL7 V2.5 identifier").
GENDERS = ("F", "M", "O", "U", "A", "N")
REFUSED_STATUSES = frozenset({"ERROR", "FAILED"})
#: Direct message states → normalised states. DISPATCHED can only be upgraded to DISPLAYED.
STATUS_STATES = {
    "SUCCESS": "accepted",
    "SMTPINIT": "pending",
    "PROCESSED": "pending",
    "DISPATCHED": "delivered",
    "DISPLAYED": "read",
    "FAILED": "failed",
    "FAILED-TO": "failed",
}
_MIME_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_FILE_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")

ATTACHMENT_SPEC = Spec(
    "medallies attachment",
    "One clinical document (C-CDA, PDF, ...), Base64 with its media type and title.",
    (
        string("attachmentClass", "Media type of the document.", required=True, example="application/pdf"),
        string("attachmentContent", "The document, Base64.", required=True),
        string("attachmentTitle", "Title of the document.", required=True),
        string("attachmentFileName", "File name to deliver, *without* extension."),
    ),
)
_PATIENT_FIELDS = (
    ("patientId", "Patient id (HL7 v2.5 CX logic)."),
    ("assigning_authority", "OID of the authority that assigned patientId."),
    ("patientIdType", "Patient id type."),
    ("patientFirstname", "Given name."),
    ("patientMiddlename", "Middle name."),
    ("patientLastname", "Family name."),
    ("patientDOB", "Date of birth, YYYYMMDD."),
    ("patientGender", "Administrative sex, HL7 table 0001."),
    ("patientAddressStreet1", "Street address, line 1."),
    ("patientAddressStreet2", "Street address, line 2."),
    ("patientAddressCity", "City."),
    ("patientAddressState", "State."),
    ("patientAddressZip", "ZIP code."),
    ("patient_summary", "Free-text patient summary."),
    ("loincName", "LOINC name of the document."),
    ("loincValue", "LOINC value."),
    ("authorPerson", "Author of the document."),
    ("authorInstitution", "Author institution (XON-like, e.g. Name^^^^^^^^^OID)."),
)
PAYLOAD_SPEC = Spec(
    "medallies payload",
    "What a mapping produces for a MedAllies Direct message.",
    (
        string(
            "toDirectAddress",
            "Recipient Direct address(es), comma-separated.",
            required=True,
            example="smith@direct.example.org",
        ),
        objects("emailAttachmentList", ATTACHMENT_SPEC, required=True),
        string("messageSubject", "Subject."),
        string("messageBody", "Introductory note."),
        string("replyToMessageId", "messageId of the first message of the conversation."),
        boolean("xdm", "true: XDM zip; false: raw SMTP attachments."),
        string("xdmFileName", "XDM package name, *without* extension."),
        boolean("asmEnabled", "true: the HISP sends a 'Dispatched' DSN back."),
        *(string(name, doc) for name, doc in _PATIENT_FIELDS),
    ),
)


class MedAlliesDestination(HttpDestination):
    """MedAllies Direct Messaging API (``/dirmsg/send_ccda``)."""

    kind = "medallies"
    has_status_api = True
    settings_spec = http_settings_spec(
        "medallies",
        "How to reach the MedAllies HISP.",
        string("username", "Basic-auth user name.", required=True),
        string("password", "Basic-auth password.", required=True, secret=True),
        string(
            "status_base_url",
            f"API root of the status query (`GET {STATUS_PATH}`). Default: `base_url` without "
            f"the `:{SEND_PORT}` port, as the document prints the status URL.",
            example="https://api.medalliesdirect.com/MessagingAPI",
        ),
        string(
            "from_direct_address",
            "This edge's own Direct address.",
            required=True,
            example="lab@direct.example.org",
        ),
        string(
            "webhook_user",
            "Basic-auth user MedAllies signs its DSN and inbound POSTs with.",
            default="medallies",
        ),
        string(
            "webhook_secret",
            "The shared secret of those POSTs; with `courier run --webhooks` "
            "it serves the DSN and inbound Direct message webhooks.",
            secret=True,
        ),
        *webhook_fields(INBOUND_MAX_BODY_BYTES, "the inbound Direct message webhook"),
    )
    payload_spec = PAYLOAD_SPEC
    auth_failed_reason = "MedAllies credentials rejected: check username and password"

    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        problems = check_payload(PAYLOAD_SPEC, payload)
        to = payload.get("toDirectAddress")
        if isinstance(to, str) and to and not all(rules.is_email(a.strip()) for a in to.split(",")):
            problems.append(
                Problem(
                    "toDirectAddress",
                    DATA_TYPE,
                    "toDirectAddress must be Direct addresses separated by commas",
                )
            )
        dob = payload.get("patientDOB")
        if isinstance(dob, str) and dob and not rules.is_date_yyyymmdd(dob):
            problems.append(Problem("patientDOB", DATA_TYPE, "patientDOB must be a date YYYYMMDD"))
        gender = payload.get("patientGender")
        if isinstance(gender, str) and gender and gender not in GENDERS:
            problems.append(Problem("patientGender", TABLE_VALUE, "patientGender must be from table 0001"))
        authority = payload.get("assigning_authority")
        if isinstance(authority, str) and authority and not _OID.match(authority):
            problems.append(Problem("assigning_authority", DATA_TYPE, "assigning_authority must be an OID"))
        problems += _file_name_problems("xdmFileName", payload.get("xdmFileName"))
        for i, attachment in enumerate(payload.get("emailAttachmentList") or ()):
            if isinstance(attachment, Mapping):
                problems += _attachment_problems(f"emailAttachmentList[{i}].", attachment)
        return problems

    def send(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str,
        conversation_id: str | None = None,
        resume: str | None = None,
    ) -> SendResult:
        message_id = direct_message_id(str(message_uuid(idempotency_key)))
        return self.request(
            "POST",
            SEND_PATH,
            json=build_request(payload, message_id, self.settings["from_direct_address"]),
            auth=(self.settings["username"], self.settings["password"]),
            on_success=lambda response: _answer(response, message_id),
        )

    def url(self, path: str) -> str:
        if path == STATUS_PATH:
            return status_base_url(self.settings).rstrip("/") + path
        return super().url(path)

    def check_status(self, remote_id: str) -> list[StatusUpdate]:
        body = self.fetch_json(
            "GET",
            STATUS_PATH,
            purpose="MedAllies status query",
            params={"xdMsgId": remote_id, "fromDirectAddress": self.settings["from_direct_address"]},
            auth=(self.settings["username"], self.settings["password"]),
        )
        status = get_ci(body, "status")
        if not isinstance(status, str):
            raise DestinationError("MedAllies status query failed: no status in the answer")
        failure = get_ci(body, "failureReason")
        detail = f"{status}: {failure}" if failure else status
        state = STATUS_STATES.get(status.upper(), "pending")
        return [StatusUpdate(state, recipient=get_ci(body, "recipient"), detail=detail)]


def status_base_url(settings: Mapping[str, Any]) -> str:
    """``status_base_url``, or else ``base_url`` in the document's status form (no ``:9443``)."""
    if settings.get("status_base_url"):
        return str(settings["status_base_url"])
    parts = urlsplit(settings["base_url"])
    if parts.port != SEND_PORT:
        return str(settings["base_url"])
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]))


def direct_message_id(text: str) -> str:
    """A Direct ``messageId`` in the one form Courier sends and stores: ``urn:uuid:`` and the
    lower-case uuid. DSNs name the same message by its bare uuid (the document's examples
    print both), so every id MedAllies gives back goes through here; ids that are not uuids
    are left as they are."""
    try:
        return f"urn:uuid:{uuid.UUID(text.strip())}"
    except ValueError:
        return text


def build_request(payload: Mapping[str, Any], message_id: str, sender: str) -> dict[str, Any]:
    """The send_ccda JSON: the mapped fields as they are, plus our sender and messageId."""
    request: dict[str, Any] = {"fromDirectAddress": sender, "messageId": message_id}
    for field in PAYLOAD_SPEC.fields:
        value = payload.get(field.name)
        if is_blank(value):
            continue
        if field.kind == "bool":
            value = as_bool(value)
        elif field.kind == "objects":
            value = [{k: v for k, v in item.items() if not is_blank(v)} for item in value]
        request[field.name] = value
    return request


def _answer(response: requests.Response, message_id: str) -> SendResult:
    body = json_body(response)
    status = str(get_ci(body, "status") or "")
    transaction_id = get_ci(body, "transactionId")
    ids = {"messageId": message_id}
    if transaction_id:
        ids["transactionId"] = str(transaction_id)
    if status.upper() in REFUSED_STATUSES:
        result = str(get_ci(body, "result") or status)
        return SendResult(Outcome.REJECTED, vendor_ids=ids, reason=f"MedAllies: {result}", vendor_text=result)
    return SendResult(Outcome.ACCEPTED, remote_id=message_id, vendor_ids=ids, reason=status)


def _attachment_problems(prefix: str, attachment: Mapping[str, Any]) -> list[Problem]:
    problems = []
    media_type, key = attachment.get("attachmentClass"), prefix + "attachmentClass"
    if isinstance(media_type, str) and media_type and not _MIME_TYPE.match(media_type):
        problems.append(Problem(key, DATA_TYPE, f"{key} must be a media type such as application/pdf"))
    content, key = attachment.get("attachmentContent"), prefix + "attachmentContent"
    if isinstance(content, str) and content and rules.base64_decoded_size(content) is None:
        problems.append(Problem(key, DATA_TYPE, f"{key} is not valid Base64"))
    return problems + _file_name_problems(prefix + "attachmentFileName", attachment.get("attachmentFileName"))


def _file_name_problems(key: str, name: Any) -> list[Problem]:
    if isinstance(name, str) and _FILE_EXTENSION.search(name):
        return [Problem(key, DATA_TYPE, f"{key} must not have a file extension")]
    return []
