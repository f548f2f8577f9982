"""Quicksilva conneQt 'instant' message API sandbox (seed: conneqt-instant-message-api.txt).

Routes: ``POST /api/v1/messages/instant/access/token``, ``POST /api/v1/messages/instant``,
``GET /api/v1/messages/{messageId}/status``. Errors are RFC 7807 problem+json.

Decisions where the document is silent or contradicts itself:

- Unknown properties are ignored, as a typical JSON API does: the seed example's
  ``body.fileName`` and ``codedDataItems[].units`` are accepted (and ``units`` is not read as
  ``unit``). The example's attachment without ``fileName`` is *rejected*: the schema says 1..1.
- A missing or wrong AccessToken answers 401 (the user is not authenticated); the doc's 401
  speaks only of the ApiKey. The unauthorised demo ApiKey answers 403, and so does a token
  whose user revoked permission (control ``POST /_sandbox/revoke_tokens``; the document
  says only "an HTTP error status"). AccessTokens do not otherwise expire (no lifetime is
  documented).
- ``recipient.id.type`` must be ``OcsClientIdentifier``, the only value the document shows
  (its example); ``subject.id.type`` must be ``VerifiedNhsNumber`` likewise, and its value
  a valid NHS number.
- The status poll needs the same ApiKey *and* AccessToken as sending: the document defines
  no other authentication for the instant message API.
- "Unknown Recipient": any recipient value starting with ``UNKNOWN`` (the sandbox cannot know
  the real register of GP practices).
- 5 MB per attachment is read as 5 MiB (5,242,880 bytes) after Base64 decoding.
- ``codedDataItems[].code`` must be a SNOMED CT *concept* id: partition 00 or 10, Verhoeff ok.
- Status JSON is a GAP in the public material; the sandbox answers
  ``{"messageId", "status", "subStatus"?}``. A new message is PENDING with sub-status
  ``"Awaiting instant import"`` (invented), then COMPLETED after ``completed_after_s``; an
  ``expiryDateTime`` reached while PENDING makes it EXPIRED. REJECTED and the PENDING
  sub-status "Failed instant message import" are reached through the control API.
  Terminal states (COMPLETED, REJECTED, EXPIRED) never change.
- Resending the same messageId with the same content answers 200 again and counts a
  duplicate; the same messageId with different content is a 400 validation error.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from courier_sandbox.base import ControlError, Route, VendorSandbox
from courier_sandbox.checks import (
    is_nhs_number,
    is_uuid,
    parse_rfc3339,
    snomed_concept_problem,
    windows_file_name_problem,
)
from courier_sandbox.credentials import Credentials, matches
from courier_sandbox.http import ParsedRequest, Reply, decode_base64, json_reply
from courier_sandbox.recording import fingerprint

PROBLEM_BASE = "https://qxlva.com/im1toolbar/documentation/api/v1/"
ATTACHMENT_TYPES = frozenset(
    {"application/pdf", "image/jpeg", "text/plain", "text/vnd.qxlva.conneqt.consultation"}
)
BODY_TYPES = frozenset({"text/plain", "text/html"})
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
MAX_ATTACHMENTS = 10
TERMINAL = frozenset({"COMPLETED", "REJECTED", "EXPIRED"})
STATUSES = TERMINAL | {"PENDING"}
INITIAL_SUB_STATUS = "Awaiting instant import"
RECIPIENT_ID_TYPE = "OcsClientIdentifier"
SUBJECT_ID_TYPE = "VerifiedNhsNumber"


@dataclass
class ConneqtTimings:
    completed_after_s: float | None = 2.0


class ConneqtSandbox(VendorSandbox):
    name = "conneqt"

    def __init__(
        self,
        reactor: Any,
        *,
        credentials: Credentials,
        timings: ConneqtTimings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor, **kwargs)
        self.credentials = credentials
        self.timings = timings or ConneqtTimings()
        self.tokens: set[str] = set()
        self.revoked: set[str] = set()

    def routes(self) -> list[Route]:
        return [
            Route("POST", r"/api/v1/messages/instant/access/token", self.exchange_code),
            Route("POST", r"/api/v1/messages/instant", self.send_instant),
            Route("GET", r"/api/v1/messages/(?P<message_id>[^/]+)/status", self.status),
        ]

    def control_routes(self) -> list[Route]:
        return [Route("POST", r"/_sandbox/revoke_tokens", self._control_revoke)]

    def reset_vendor(self) -> None:
        self.tokens.clear()
        self.revoked.clear()

    def vendor_snapshot(self) -> dict[str, Any]:
        return {"tokens": sorted(self.tokens), "revoked": sorted(self.revoked)}

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        self.tokens.update(saved["tokens"])
        self.revoked.update(saved["revoked"])

    def resume(self, message_id: str) -> None:
        self._schedule_statuses(message_id)

    def _control_revoke(self, request: ParsedRequest) -> Reply:
        """The toolbar user withdraws permission: every AccessToken issued so far stops."""
        self.revoked |= self.tokens
        self.tokens.clear()
        return json_reply(200, {"revoked": len(self.revoked)})

    def configure(self, settings: dict[str, Any]) -> None:
        for name, value in settings.items():
            if not hasattr(self.timings, name):
                raise ValueError(f"unknown conneqt setting {name!r}")
            setattr(self.timings, name, value)

    def error_reply(self, status: int, detail: str, invalid: list[dict[str, Any]] | None = None) -> Reply:
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + ("validation-error" if invalid else f"error-{status}"),
            "title": "Request Validation Error" if invalid else detail,
            "status": status,
            "detail": detail,
            "instance": f"urn:uuid:{uuid.uuid4()}",
        }
        if invalid:
            problem["invalidParameters"] = invalid
        return json_reply(status, problem, "application/problem+json")

    # -- endpoints ---------------------------------------------------------------------
    def exchange_code(self, request: ParsedRequest) -> Reply:
        refused = self._check_api_key(request) or self._check_json(request)
        if refused:
            return refused
        code = request.json.get("accessCode")
        if not matches(code, self.credentials.conneqt_access_code):
            return self._invalid([_param("accessCode", "Unknown or expired access code")])
        token = str(uuid.uuid4())
        self.tokens.add(token)
        return json_reply(200, {"token": token})

    def send_instant(self, request: ParsedRequest) -> Reply:
        refused = (
            self._check_api_key(request) or self._check_access_token(request) or self._check_json(request)
        )
        if refused:
            return refused
        message = request.json
        invalid = validate_instant(message, self.now())
        message_id = message.get("messageId")
        known = self.state.messages.get(message_id) if isinstance(message_id, str) else None
        if known is not None and known["fingerprint"] != fingerprint(message):
            invalid.append(_param("messageId", "messageId already used for another message", message_id))
        if invalid:
            return self._invalid(invalid)
        if known is not None:
            self.state.duplicates[message_id] += 1
        else:
            self._accept(message)
        return json_reply(200, {"messageStatusEndpoint": f"/api/v1/messages/{message_id}/status"})

    def status(self, request: ParsedRequest, message_id: str) -> Reply:
        refused = self._check_api_key(request) or self._check_access_token(request)
        if refused:
            return refused
        self.state.status_polls[message_id] += 1
        record = self.state.messages.get(message_id)
        if record is None:
            return self.error_reply(404, "Unknown message")
        body = {"messageId": message_id, "status": record["status"]}
        if record.get("subStatus"):
            body["subStatus"] = record["subStatus"]
        return json_reply(200, body)

    # -- status model ------------------------------------------------------------------
    def _accept(self, message: dict[str, Any]) -> None:
        message_id = message["messageId"]
        self.state.messages[message_id] = {
            "messageId": message_id,
            "status": "PENDING",
            "subStatus": INITIAL_SUB_STATUS,
            "received_at": self.now(),
            "recipient": message["recipient"]["id"]["value"],
            "attachments": len(message["attachments"]),
            "fingerprint": fingerprint(message),
            "expiryDateTime": message.get("expiryDateTime"),
        }
        self._schedule_statuses(message_id)

    def _schedule_statuses(self, message_id: str) -> None:
        """COMPLETED after ``completed_after_s`` and EXPIRED at the expiry, from now, unless final."""
        record = self.state.messages[message_id]
        if record["status"] in TERMINAL:
            return
        self.schedule(self.timings.completed_after_s, self._move, message_id, "COMPLETED", None)
        expiry = record.get("expiryDateTime")
        if expiry:
            left = parse_rfc3339(expiry).timestamp() - self.now()
            self.schedule(max(left, 0), self._expire, message_id)

    def _expire(self, message_id: str) -> None:
        if self.state.messages[message_id]["status"] == "PENDING":
            self._move(message_id, "EXPIRED", None)

    def _move(self, message_id: str, status: str, sub_status: str | None) -> bool:
        record = self.state.messages[message_id]
        if record["status"] in TERMINAL:
            return False
        record["status"], record["subStatus"] = status, sub_status
        return True

    def force_status(self, message_id: str, change: dict[str, Any]) -> dict[str, Any]:
        if message_id not in self.state.messages:
            raise ControlError(404, "unknown message")
        status = change.get("status")
        if status not in STATUSES:
            raise ControlError(400, f"status must be one of {sorted(STATUSES)}")
        if not self._move(message_id, status, change.get("subStatus")):
            raise ControlError(409, "terminal status never changes")
        return self.state.messages[message_id]

    # -- checks ------------------------------------------------------------------------
    def _check_api_key(self, request: ParsedRequest) -> Reply | None:
        key = request.header("ApiKey")
        if matches(key, self.credentials.conneqt_unauthorised_api_key):
            return self.error_reply(403, "The provided API key is valid but not authorized")
        if not matches(key, self.credentials.conneqt_api_key):
            return self.error_reply(401, "Missing or invalid API key")
        return None

    def _check_access_token(self, request: ParsedRequest) -> Reply | None:
        access_token = request.header("AccessToken")
        if access_token in self.revoked:
            return self.error_reply(403, "The user has revoked permission for instant messages")
        if access_token not in self.tokens:
            return self.error_reply(401, "Missing or invalid AccessToken")
        return None

    def _check_json(self, request: ParsedRequest) -> Reply | None:
        if request.content_type != "application/json":
            return self._invalid([_param("Content-Type", "Must be 'application/json'", request.content_type)])
        if request.json_error or not isinstance(request.json, dict):
            return self._invalid([_param("body", "Request body must be a JSON object")])
        return None

    def _invalid(self, invalid: list[dict[str, Any]]) -> Reply:
        return self.error_reply(400, "Validation issues found in your request", invalid)


def _param(name: str, reason: str, value: Any = None) -> dict[str, Any]:
    found = {"name": name, "reason": reason}
    if value is not None:
        found["value"] = value
    return found


def _string(message: dict[str, Any], path: str) -> Any:
    value: Any = message
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def validate_instant(message: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Every rule of the instant message schema; an empty list means valid."""
    invalid: list[dict[str, Any]] = []
    if not is_uuid(message.get("messageId")):
        invalid.append(_param("messageId", "Must be a UUID", message.get("messageId")))
    if message.get("type") != "ToolbarInstantMessage":
        invalid.append(_param("type", "Must be 'ToolbarInstantMessage'", message.get("type")))
    for path in ("topic", "recipient.id.type", "recipient.id.value", "subject.id.type", "subject.id.value"):
        value = _string(message, path)
        if not isinstance(value, str) or not value.strip():
            invalid.append(_param(path, "Required string is missing or empty"))
    recipient = _string(message, "recipient.id.value")
    if isinstance(recipient, str) and recipient.upper().startswith("UNKNOWN"):
        invalid.append(_param("recipient", "Unknown Recipient"))
    for path, expected in (("recipient.id.type", RECIPIENT_ID_TYPE), ("subject.id.type", SUBJECT_ID_TYPE)):
        value = _string(message, path)
        if isinstance(value, str) and value.strip() and value != expected:
            invalid.append(_param(path, f"Must be '{expected}'", value))
    subject = _string(message, "subject.id.value")
    if isinstance(subject, str) and subject.strip() and not is_nhs_number(subject):
        invalid.append(_param("subject.id.value", "Not a valid NHS number"))
    invalid += _expiry_problems(message.get("expiryDateTime"), now)
    invalid += _body_problems(message.get("body"))
    invalid += _attachment_problems(message.get("attachments"))
    invalid += _coded_data_problems(message.get("codedDataItems"))
    return invalid


def _expiry_problems(expiry: Any, now: float) -> list[dict[str, Any]]:
    if expiry is None:
        return []
    when = parse_rfc3339(expiry)
    if when is None:
        return [_param("expiryDateTime", "Must be an RFC 3339 date-time with Z or an offset", expiry)]
    if when.timestamp() <= now:
        return [_param("expiryDateTime", "Must be in the future", expiry)]
    return []


def _body_problems(body: Any) -> list[dict[str, Any]]:
    if body is None:
        return []
    if not isinstance(body, dict):
        return [_param("body", "Must be an object")]
    found = []
    if body.get("mimeType") not in BODY_TYPES:
        found.append(_param("body.mimeType", "Must be 'text/plain' or 'text/html'", body.get("mimeType")))
    if not isinstance(body.get("content"), str):
        found.append(_param("body.content", "Required string is missing"))
    return found


def _attachment_problems(attachments: Any) -> list[dict[str, Any]]:
    if not isinstance(attachments, list) or not 1 <= len(attachments) <= MAX_ATTACHMENTS:
        return [_param("attachments", f"Must hold 1 to {MAX_ATTACHMENTS} attachments")]
    found = []
    for i, attachment in enumerate(attachments):
        name = f"attachments[{i}]"
        if not isinstance(attachment, dict):
            found.append(_param(name, "Must be an object"))
            continue
        if attachment.get("mimeType") not in ATTACHMENT_TYPES:
            found.append(
                _param(f"{name}.mimeType", "Not a permitted attachment type", attachment.get("mimeType"))
            )
        file_name = attachment.get("fileName")
        problem = (
            windows_file_name_problem(file_name)
            if isinstance(file_name, str)
            else "Required string is missing"
        )
        if problem:
            found.append(_param(f"{name}.fileName", f"File name {problem}"))
        content = attachment.get("content")
        data = decode_base64(content) if isinstance(content, str) else None
        if data is None:
            found.append(_param(f"{name}.content", "Must be Base64"))
        elif len(data) > MAX_ATTACHMENT_BYTES:
            found.append(_param(f"{name}.content", "Attachment is larger than 5MB"))
    return found


def _coded_data_problems(items: Any) -> list[dict[str, Any]]:
    if items is None:
        return []
    if not isinstance(items, list):
        return [_param("codedDataItems", "Must be an array")]
    found = []
    for i, item in enumerate(items):
        name = f"codedDataItems[{i}]"
        code = item.get("code") if isinstance(item, dict) else None
        problem = snomed_concept_problem(code) if isinstance(code, str) else "is missing"
        if problem:
            found.append(_param(f"{name}.code", f"SNOMED code {problem}", code))
        value = item.get("value") if isinstance(item, dict) else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            found.append(_param(f"{name}.value", "Must be a number", value))
    return found
