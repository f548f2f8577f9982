"""Quicksilva conneQt: pre-approved ("instant") messages into a GP practice's patient record.

``POST /api/v1/messages/instant`` with ``ApiKey`` and ``AccessToken`` headers; the token comes
from exchanging a toolbar access code (:meth:`ConneqtDestination.exchange_access_code`).
Errors are RFC 7807 problems whose ``invalidParameters`` are carried into the result.

Conflicts in the vendor document, and how they are resolved here:

* The example ``codedDataItems`` use ``units``; the schema table says ``unit``. We send
  ``unit``: the table is the definition, the example is illustration.
* The example ``body`` has a ``fileName`` the schema lacks, and its attachment lacks the
  required ``fileName``. We follow the schema: no ``body.fileName``, always an attachment
  ``fileName``.
* ``recipient.id.type`` is ``OcsClientIdentifier`` in the example while the text speaks of
  "an organisation's ODS code" and names no other type. The document's own value is the
  default; a mapping may set ``recipientIdType`` to ``OdsOrganisationId`` (the type the GP
  Connect endpoint fixes for ODS codes) where Quicksilva says so.
* "5MB" per attachment is read as 5,000,000 bytes decoded: the strictest reading, so nothing
  we let through is refused by a GP system that counts in decimal megabytes.
* The Pre-approved Messaging principles say an attachment must never be resent after a
  content-related error. Only the problem's own ``invalidParameters`` naming an attachment
  make a 5xx final; the words of its title are not guessed at, so a plain 500 is retried.
* 403 ("the provided API key is valid but not authorised") is a set-up problem, not the
  message's: the destination is held like on a 401 (:class:`~engine.destinations.base.Outcome`).
* The status query needs ``ApiKey``; ``AccessToken`` is sent with it too, as on sending.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
from engine.destinations.payload import DATA_TYPE, TOO_LONG, as_number, check_payload, is_blank
from engine.destinations.problem_details import describe_problem, names_an_attachment
from engine.destinations.transport import HttpDestination, get_ci, http_settings_spec, json_body
from engine.mapping.checks import nhs_number_problem
from engine.spec import Spec, number, objects, string

MESSAGE_TYPE = "ToolbarInstantMessage"
SUBJECT_ID_TYPE = "VerifiedNhsNumber"
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 5_000_000
ATTACHMENT_MIME_TYPES = (
    "application/pdf",
    "image/jpeg",
    "text/plain",
    "text/vnd.qxlva.conneqt.consultation",
)
_ODS_CODE = re.compile(r"^[A-Z0-9]{3,10}$")

ATTACHMENT_SPEC = Spec(
    "conneqt attachment",
    "One document for the patient record (1 to 10 per message).",
    (
        string("mimeType", "Permitted attachment type.", required=True, choices=ATTACHMENT_MIME_TYPES),
        string("fileName", "A valid Windows file name.", required=True, example="Result.pdf"),
        string("content", "The document, Base64; at most 5 MB decoded.", required=True),
    ),
)
CODED_DATA_ITEM_SPEC = Spec(
    "conneqt coded data item",
    "A SNOMED CT coded item describing the attachment's content.",
    (
        string("code", "SNOMED CT concept id (Verhoeff check digit).", required=True, example="407554009"),
        number("value", "A value for the code, if any."),
        string("unit", "Unit of the value, if any.", example="mmHg"),
        string("additionalText", "Free text linked to the code."),
    ),
)
PAYLOAD_SPEC = Spec(
    "conneqt payload",
    "What a mapping produces for a conneQt instant message.",
    (
        string("topic", "System-defined category of the message.", required=True, example="PathologyResult"),
        string("recipientId", "The GP practice's ODS code.", required=True, example="A81001"),
        string(
            "recipientIdType",
            "Type of recipientId; the document's example uses OcsClientIdentifier.",
            default="OcsClientIdentifier",
            choices=("OdsOrganisationId", "OcsClientIdentifier"),
        ),
        string(
            "nhsNumber",
            "The patient's verified NHS number (Modulus 11).",
            required=True,
            example="9434765919",
        ),
        string("expiryDateTime", "RFC 3339 with Z or an offset, in the future."),
        string("bodyContent", "Free text shown to the recipient."),
        string(
            "bodyMimeType", "Type of bodyContent.", default="text/plain", choices=("text/plain", "text/html")
        ),
        objects("attachments", ATTACHMENT_SPEC, required=True),
        objects("codedDataItems", CODED_DATA_ITEM_SPEC),
    ),
)

#: conneQt status words → normalised states. REJECTED, COMPLETED and EXPIRED are terminal.
STATUS_STATES = {
    "PENDING": "pending",
    "COMPLETED": "delivered",
    "REJECTED": "failed",
    "EXPIRED": "expired",
}


class ConneqtDestination(HttpDestination):
    """conneQt Toolbar instant messages (``/api/v1/messages/instant``)."""

    kind = "conneqt"
    has_status_api = True
    settings_spec = http_settings_spec(
        "conneqt",
        "How to reach Quicksilva conneQt.",
        string("api_key", "The ApiKey Quicksilva issued to this system.", required=True, secret=True),
        string(
            "access_code",
            "Toolbar access code: at start, when no AccessToken is stored, "
            "it is exchanged for one, which is then kept (encrypted) in the store.",
            secret=True,
        ),
        string("access_token", "AccessToken given directly, instead of access_code.", secret=True),
    )
    payload_spec = PAYLOAD_SPEC
    auth_failed_reason = "conneQt ApiKey or AccessToken rejected: exchange a new access code"

    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        problems = check_payload(PAYLOAD_SPEC, payload)
        nhs_number = payload.get("nhsNumber")
        if isinstance(nhs_number, str) and nhs_number and (why := nhs_number_problem(nhs_number)):
            problems.append(Problem("nhsNumber", DATA_TYPE, f"nhsNumber: {why}"))
        recipient = payload.get("recipientId")
        if isinstance(recipient, str) and recipient and not _ODS_CODE.match(recipient):
            problems.append(
                Problem("recipientId", DATA_TYPE, "recipientId must be 3-10 upper-case letters/digits")
            )
        problems += self._expiry_problems(payload.get("expiryDateTime"))
        problems += _attachment_problems(payload.get("attachments"))
        problems += _coded_item_problems(payload.get("codedDataItems"))
        return problems

    def _expiry_problems(self, expiry: Any) -> list[Problem]:
        if not isinstance(expiry, str) or not expiry:
            return []
        when = rules.parse_rfc3339(expiry)
        if when is None:
            text = "expiryDateTime must be RFC 3339 with Z or an offset"
        elif when <= self.now():
            text = "expiryDateTime must be in the future"
        else:
            return []
        return [Problem("expiryDateTime", DATA_TYPE, text)]

    def send(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str,
        conversation_id: str | None = None,
        resume: str | None = None,
    ) -> SendResult:
        token = self._access_token()
        if token is None:
            return SendResult(
                Outcome.AUTH_FAILED, reason="conneQt AccessToken missing: exchange an access code"
            )
        message_id = str(message_uuid(idempotency_key))

        def accepted(response: requests.Response) -> SendResult:
            endpoint = get_ci(json_body(response), "messageStatusEndpoint")
            ids = {"messageId": message_id}
            if isinstance(endpoint, str):
                ids["messageStatusEndpoint"] = endpoint
            return SendResult(Outcome.ACCEPTED, remote_id=message_id, vendor_ids=ids)

        return self.request(
            "POST",
            "/api/v1/messages/instant",
            json=build_request(payload, message_id),
            headers={"ApiKey": self.settings["api_key"], "AccessToken": token},
            on_success=accepted,
            describe_error=describe_problem,
            is_permanent=names_an_attachment,
        )

    def _access_token(self) -> str | None:
        if self.token_provider is not None:
            return self.token_provider.token()
        return self.settings.get("access_token")

    def exchange_access_code(self, access_code: str) -> str:
        """Trade a toolbar access code for the AccessToken that instant messages need."""
        answer = self.fetch_json(
            "POST",
            "/api/v1/messages/instant/access/token",
            purpose="conneQt access code exchange",
            describe_error=describe_problem,
            json={"accessCode": access_code},
            headers={"ApiKey": self.settings["api_key"]},
        )
        token = get_ci(answer, "token")
        if not isinstance(token, str) or not token:
            raise DestinationError("conneQt access code exchange failed: no token in the answer")
        return token

    def check_status(self, remote_id: str) -> list[StatusUpdate]:
        """The message's state; the response layout is undocumented, so it is read loosely."""
        token = self._access_token()
        if token is None:
            raise DestinationError("conneQt status query skipped: AccessToken missing")
        body = self.fetch_json(
            "GET",
            f"/api/v1/messages/{remote_id}/status",
            purpose="conneQt status query",
            describe_error=describe_problem,
            headers={"ApiKey": self.settings["api_key"], "AccessToken": token},
        )
        status = get_ci(body, "status")
        if not isinstance(status, str):
            raise DestinationError("conneQt status query failed: no status in the answer")
        sub_status = get_ci(body, "subStatus")
        detail = f"{status}: {sub_status}" if sub_status else status
        return [StatusUpdate(STATUS_STATES.get(status.upper(), "pending"), detail=detail)]


def _default(key: str) -> str:
    """A payload key's default, as the payload spec declares it."""
    return PAYLOAD_SPEC.field(key).default


def build_request(payload: Mapping[str, Any], message_id: str) -> dict[str, Any]:
    """The instant-message JSON for one validated payload."""
    request: dict[str, Any] = {
        "messageId": message_id,
        "type": MESSAGE_TYPE,
        "topic": payload["topic"],
        "recipient": {
            "id": {
                "type": payload.get("recipientIdType") or _default("recipientIdType"),
                "value": payload["recipientId"],
            }
        },
        "subject": {"id": {"type": SUBJECT_ID_TYPE, "value": payload["nhsNumber"]}},
        "attachments": [
            {"mimeType": a["mimeType"], "fileName": a["fileName"], "content": a["content"]}
            for a in payload["attachments"]
        ],
    }
    if payload.get("expiryDateTime"):
        request["expiryDateTime"] = payload["expiryDateTime"]
    if payload.get("bodyContent"):
        request["body"] = {
            "mimeType": payload.get("bodyMimeType") or _default("bodyMimeType"),
            "content": payload["bodyContent"],
        }
    if payload.get("codedDataItems"):
        request["codedDataItems"] = [_coded_item(item) for item in payload["codedDataItems"]]
    return request


def _coded_item(item: Mapping[str, Any]) -> dict[str, Any]:
    coded: dict[str, Any] = {"code": item["code"]}
    if not is_blank(item.get("value")):
        coded["value"] = as_number(item["value"])
    for key in ("unit", "additionalText"):
        if item.get(key):
            coded[key] = item[key]
    return coded


def _attachment_problems(attachments: Any) -> list[Problem]:
    if not isinstance(attachments, list | tuple):
        return []
    problems = []
    if len(attachments) > MAX_ATTACHMENTS:
        problems.append(
            Problem("attachments", DATA_TYPE, f"at most {MAX_ATTACHMENTS} attachments per message")
        )
    for i, attachment in enumerate(attachments):
        if not isinstance(attachment, Mapping):
            continue
        name, content = attachment.get("fileName"), attachment.get("content")
        if isinstance(name, str) and name and (why := rules.windows_file_name_problem(name)):
            key = f"attachments[{i}].fileName"
            problems.append(Problem(key, DATA_TYPE, f"{key} {why}"))
        if isinstance(content, str) and content:
            key, size = f"attachments[{i}].content", rules.base64_decoded_size(content)
            if size is None:
                problems.append(Problem(key, DATA_TYPE, f"{key} is not valid Base64"))
            elif size > MAX_ATTACHMENT_BYTES:
                problems.append(Problem(key, TOO_LONG, f"{key} is larger than 5 MB decoded"))
    return problems


def _coded_item_problems(items: Any) -> list[Problem]:
    if not isinstance(items, list | tuple):
        return []
    return [
        Problem(f"codedDataItems[{i}].code", DATA_TYPE, f"codedDataItems[{i}].code: {why}")
        for i, item in enumerate(items)
        if isinstance(item, Mapping) and isinstance(item.get("code"), str) and item["code"]
        if (why := rules.snomed_concept_problem(item["code"]))
    ]
