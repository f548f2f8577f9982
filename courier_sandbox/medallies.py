"""MedAllies Direct Messaging API sandbox (seed: medallies-direct-messaging-api.txt).

Routes: ``POST /MessagingAPI/dirmsg/send_ccda``, ``GET /MessagingAPI/dirmsg/status``; the
``/MessagingAPI`` prefix is optional (the seed's status URL drops ``:9443`` and clients may
be configured with either base). Control extras: ``POST /_sandbox/inbound`` posts an inbound
Direct message to the configured ``inbound_url``.

Statuses: SMTPINIT on acceptance → PROCESSED (``processed_after_s``) → DISPATCHED
(``dispatched_after_s``); DISPLAYED only via the control API or ``displayed_after_s``.
A message not final after ``mdn_timeout_s`` (1 hour, as documented) becomes FAILED-TO.
DISPATCHED only upgrades to DISPLAYED; DISPLAYED, FAILED and FAILED-TO never change.

Magic recipients (the sandbox cannot know real trust bundles): a recipient whose local part
starts with ``fail`` makes the message FAILED with ``9002: ERROR=NoTrustedRecipients`` instead
of being processed; one starting with ``noreply`` never gets an MDN and ends FAILED-TO.

Decisions where the document is silent:

- Error bodies follow the older v2.0 wrapper: ``{"status": "Error", "result": <reason>}``.
- ``attachmentClass`` is listed both as part of each document and as optional; it is
  optional here but must look like a MIME type when present. ``emailAttachmentList`` needs at
  least one Base64 document.
- A resend of the same messageId and content answers the same acknowledgement again and
  counts a duplicate; reusing a messageId for other content is 400 ("must be unique").
- The DSN webhook is sent to ``dsn_url`` for PROCESSED, DISPATCHED (only when
  ``asmEnabled`` is true, as documented), DISPLAYED, FAILED and FAILED-TO, with the same
  Basic shared secret as inbound messages (the document does not say how DSN posts are
  authenticated).
- DSN ``Id``: the document's success examples (processed, dispatched) print a bare uuid, its
  failure example the ``urn:uuid:`` form sending uses; the sandbox sends them the same way,
  so a receiver must match both forms.
- A status query whose ``fromDirectAddress`` is not the message's sender is 403; one that is
  not a Direct address at all is 400 (its documented "Format").
- Headers: "Content-Type: application/json" is printed with Authorization as what "all API
  requests" carry; it is required where there is a body (send_ccda) and not on the body-less
  status GET.
- ``attachmentFileName`` is listed among the optional fields next to ``attachmentClass``
  (a per-document field) with no level given; it is read in each document and at the top
  level, as ``xdmFileName``. Either "should not" carry an extension: a name ending in a dot
  and 1-4 letters or digits, one a letter (``report.pdf``), is 400; ``order-12.5`` and
  ``attachment/ccda`` are fine.
- Each document is an object whose ``attachmentTitle``, ``attachmentClass`` and
  ``attachmentFileName`` are text when present; a title is not required (the required-field
  table says "described by ... a title" but the examples are the only other source).
- ``messageId`` needs no particular form (the ``urn:uuid:`` one is an example).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from courier_sandbox.base import ControlError, Route, VendorSandbox
from courier_sandbox.checks import is_email, is_mime_type
from courier_sandbox.credentials import Credentials, matches
from courier_sandbox.http import ParsedRequest, Reply, decode_base64, json_reply
from courier_sandbox.recording import fingerprint

PREFIX = r"(?:/MessagingAPI)?"
FAILURE_REASON = "9002: ERROR=NoTrustedRecipients"
TIMEOUT_REASON = "9003: ERROR=NoMDNWithinTimeframe"
NEXT = {
    "SMTPINIT": {"PROCESSED", "DISPATCHED", "FAILED", "FAILED-TO"},
    "PROCESSED": {"DISPATCHED", "FAILED", "FAILED-TO"},
    "DISPATCHED": {"DISPLAYED"},
}
DISPOSITION = {
    "PROCESSED": "processed",
    "DISPATCHED": "dispatched",
    "DISPLAYED": "displayed",
    "FAILED": "failed",
    "FAILED-TO": "failed",
}
BOOLEAN_FIELDS = ("xdm", "asmEnabled")
ATTACHMENT_TEXT_FIELDS = ("attachmentTitle", "attachmentClass", "attachmentFileName")
FILE_NAME_FIELDS = ("attachmentFileName", "xdmFileName")
EXTENSION = re.compile(r"\.(?=[0-9]*[A-Za-z])[A-Za-z0-9]{1,4}$")  # .pdf, .xml, .mp4; not .5


@dataclass
class MedAlliesTimings:
    processed_after_s: float | None = 1.0
    dispatched_after_s: float | None = 2.0
    displayed_after_s: float | None = None
    mdn_timeout_s: float = 3600.0


class MedAlliesSandbox(VendorSandbox):
    name = "medallies"
    api_path = "/MessagingAPI"

    def __init__(
        self,
        reactor: Any,
        *,
        credentials: Credentials,
        timings: MedAlliesTimings | None = None,
        dsn_url: str | None = None,
        inbound_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(reactor, **kwargs)
        self.credentials = credentials
        self.timings = timings or MedAlliesTimings()
        self.dsn_url = dsn_url
        self.inbound_url = inbound_url
        self._acks: dict[str, dict[str, str]] = {}

    def routes(self) -> list[Route]:
        return [
            Route("POST", PREFIX + r"/dirmsg/send_ccda", self.send_ccda),
            Route("GET", PREFIX + r"/dirmsg/status", self.status),
        ]

    def control_routes(self) -> list[Route]:
        return [Route("POST", r"/_sandbox/inbound", self._control_inbound)]

    def configure(self, settings: dict[str, Any]) -> None:
        for name, value in settings.items():
            if name in ("dsn_url", "inbound_url"):
                setattr(self, name, value)
            elif hasattr(self.timings, name):
                setattr(self.timings, name, value)
            else:
                raise ValueError(f"unknown medallies setting {name!r}")

    def reset_vendor(self) -> None:
        self._acks.clear()

    def vendor_snapshot(self) -> dict[str, Any]:
        return {"acks": self._acks}

    def restore_vendor(self, saved: dict[str, Any]) -> None:
        self._acks.update(saved["acks"])

    def resume(self, message_id: str) -> None:
        if self.state.messages[message_id]["status"] in NEXT:  # not final yet
            self._schedule_statuses(message_id)

    def error_reply(self, status: int, detail: str) -> Reply:
        return json_reply(status, {"status": "Error", "result": detail})

    # -- endpoints ---------------------------------------------------------------------
    def send_ccda(self, request: ParsedRequest) -> Reply:
        refused = self._check_auth(request)
        if refused:
            return refused
        if request.content_type != "application/json":
            return self.error_reply(400, "Content-Type must be application/json")
        message = request.json
        if request.json_error or not isinstance(message, dict):
            return self.error_reply(400, "body must be a JSON object")
        problems = validate_send(message)
        if problems:
            return self.error_reply(400, "; ".join(problems))
        message_id = message["messageId"]
        known = self.state.messages.get(message_id)
        if known is not None:
            if known["fingerprint"] != fingerprint(message):
                return self.error_reply(400, "messageId must be unique per message")
            self.state.duplicates[message_id] += 1
            return json_reply(200, self._acks[message_id])
        self._accept(message)
        return json_reply(200, self._acks[message_id])

    def status(self, request: ParsedRequest) -> Reply:
        refused = self._check_auth(request)
        if refused:
            return refused
        message_id = request.query.get("xdMsgId")
        sender = request.query.get("fromDirectAddress")
        if not message_id or not sender:
            return self.error_reply(400, "xdMsgId and fromDirectAddress are required")
        if not is_email(sender.strip()):
            return self.error_reply(400, "fromDirectAddress must be a Direct address")
        self.state.status_polls[message_id] += 1
        record = self.state.messages.get(message_id)
        if record is None:
            return self.error_reply(404, "unknown xdMsgId")
        if record["sender"].lower() != sender.lower():
            return self.error_reply(403, "fromDirectAddress is not the sender of this message")
        body = {key: record[key] for key in ("sender", "recipient", "xdMsgId", "sendTime", "status")}
        if record.get("failureReason"):
            body["failureReason"] = record["failureReason"]
        return json_reply(200, body)

    # -- status model ------------------------------------------------------------------
    def _accept(self, message: dict[str, Any]) -> None:
        message_id = message["messageId"]
        now = self.now()
        recipients = split_addresses(message["toDirectAddress"])
        send_time = datetime.datetime.fromtimestamp(now, datetime.UTC)
        self.state.messages[message_id] = {
            "sender": message["fromDirectAddress"],
            "recipient": ",".join(recipients),
            "xdMsgId": message_id,
            "sendTime": f"{send_time:%Y-%m-%d %H:%M:%S}.{send_time.microsecond // 100000}",
            "status": "SMTPINIT",
            "asmEnabled": _true(message.get("asmEnabled")),
            "attachments": len(message["emailAttachmentList"]),
            "fingerprint": fingerprint(message),
        }
        self._acks[message_id] = {
            "messageId": message_id,
            "status": "SUCCESS",
            "transactionId": str(uuid.uuid4()),
            "result": "Message parse successfully",
        }
        self._schedule_statuses(message_id)

    def _schedule_statuses(self, message_id: str) -> None:
        """The status changes the recipients' addresses lead to, from now (a move the current
        status does not allow is skipped)."""
        t = self.timings
        recipients = split_addresses(self.state.messages[message_id]["recipient"])
        locals_ = [address.split("@")[0].lower() for address in recipients]
        if any(local.startswith("fail") for local in locals_):
            self.schedule(t.processed_after_s, self._move, message_id, "FAILED", FAILURE_REASON)
        elif not any(local.startswith("noreply") for local in locals_):
            self.schedule(t.processed_after_s, self._move, message_id, "PROCESSED", None)
            self.schedule(t.dispatched_after_s, self._move, message_id, "DISPATCHED", None)
            self.schedule(t.displayed_after_s, self._move, message_id, "DISPLAYED", None)
        self.schedule(t.mdn_timeout_s, self._move, message_id, "FAILED-TO", TIMEOUT_REASON)

    def _move(self, message_id: str, status: str, reason: str | None) -> bool:
        record = self.state.messages[message_id]
        if status not in NEXT.get(record["status"], ()):
            return False
        record["status"] = status
        if reason:
            record["failureReason"] = reason
        if status != "DISPATCHED" or record["asmEnabled"]:
            self._send_dsn(message_id, status, reason)
        return True

    def force_status(self, message_id: str, change: dict[str, Any]) -> dict[str, Any]:
        record = self.state.messages.get(message_id)
        if record is None:
            raise ControlError(404, "unknown message")
        status = change.get("status")
        reason = change.get("failureReason")
        if status in ("FAILED", "FAILED-TO") and not reason:
            reason = FAILURE_REASON if status == "FAILED" else TIMEOUT_REASON
        if not self._move(message_id, status, reason):
            raise ControlError(409, f"{record['status']} cannot become {status}")
        return record

    def _send_dsn(self, message_id: str, status: str, reason: str | None) -> None:
        if not self.dsn_url:
            return
        stamp = datetime.datetime.fromtimestamp(self.now(), datetime.UTC)
        failed = status.startswith("FAILED")
        dsn = {
            "Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "z",
            "Id": message_id if failed else message_id.removeprefix("urn:uuid:"),
            "Status": "Error" if failed else "Success",
            "Description": reason if failed else DISPOSITION[status],
            "Disposition": f"action/MDN-sent-automatically;{DISPOSITION[status]}",
        }
        self.deliver_webhook("dsn", self.dsn_url, json.dumps(dsn).encode(), self._webhook_headers())

    def _webhook_headers(self) -> dict[str, str]:
        pair = f"{self.credentials.medallies_webhook_user}:{self.credentials.medallies_webhook_secret}"
        return {
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
        }

    # -- inbound -----------------------------------------------------------------------
    def send_inbound(self, overrides: dict[str, Any] | None = None) -> Deferred[dict[str, Any]]:
        """POST an inbound Direct message (the documented JSON) to ``inbound_url``."""
        if not self.inbound_url:
            raise ControlError(409, "no inbound_url configured")
        message = {
            "fromDirectAddress": "referrer@medalliestestdomain.com",
            "toDirectAddress": "courier@medalliestestdomain.com",
            "emailAttachmentList": [
                {
                    "attachmentClass": "application/pdf",
                    "attachmentContent": base64.b64encode(b"%PDF-1.4 sandbox inbound").decode(),
                    "attachmentTitle": "Referral note",
                }
            ],
            "messageBody": "Referral from the MedAllies sandbox",
            "messageId": f"urn:uuid:{uuid.uuid4()}",
            "messageSubject": "Referral",
            "xdm": False,
            "asmEnabled": True,
            **(overrides or {}),
        }
        d = self.deliver_webhook(
            "inbound", self.inbound_url, json.dumps(message).encode(), self._webhook_headers()
        )
        return d.addCallback(lambda entry: {**entry, "messageId": message["messageId"]})

    def _control_inbound(self, request: ParsedRequest) -> Deferred[Reply]:
        overrides = request.json if isinstance(request.json, dict) else {}
        return self.send_inbound(overrides).addCallback(lambda entry: json_reply(200, entry))

    def _check_auth(self, request: ParsedRequest) -> Reply | None:
        user, password = basic_auth(request.header("Authorization"))
        c = self.credentials
        if user == c.medallies_readonly_user and matches(password, c.medallies_readonly_password):
            return self.error_reply(403, "You do not have access to the requested resource")
        if not (user == c.medallies_user and matches(password, c.medallies_password)):
            return self.error_reply(401, "Your API key is incorrect")
        return None


def basic_auth(header: str | None) -> tuple[str | None, str | None]:
    """(user, password) from a Basic Authorization header; (None, None) when absent or bad."""
    if not header or not header.lower().startswith("basic "):
        return None, None
    decoded = decode_base64(header[6:].strip())
    if decoded is None or b":" not in decoded:
        return None, None
    user, password = decoded.decode("utf-8", "replace").split(":", 1)
    return user, password


def split_addresses(value: str) -> list[str]:
    return [address.strip() for address in value.split(",") if address.strip()]


def _true(value: Any) -> bool:
    return value is True or value == "true"


def validate_send(message: dict[str, Any]) -> list[str]:
    """The documented field rules of send_ccda; an empty list means valid."""
    problems = []
    sender = message.get("fromDirectAddress")
    if not isinstance(sender, str) or not is_email(sender.strip()):
        problems.append("fromDirectAddress must be a Direct address")
    to = message.get("toDirectAddress")
    if not isinstance(to, str) or not split_addresses(to):
        problems.append("toDirectAddress is required")
    elif not all(is_email(a) for a in split_addresses(to)):
        problems.append("toDirectAddress must be comma-separated Direct addresses")
    if not isinstance(message.get("messageId"), str) or not message["messageId"].strip():
        problems.append("messageId is required")
    attachments = message.get("emailAttachmentList")
    if not isinstance(attachments, list) or not attachments:
        problems.append("emailAttachmentList must hold at least one document")
    else:
        for i, item in enumerate(attachments):
            problems += _attachment_problems(f"emailAttachmentList[{i}]", item)
    problems += _file_name_problems("", message)
    for name in BOOLEAN_FIELDS:
        if name in message and message[name] not in (True, False, "true", "false"):
            problems.append(f"{name} must be true or false")
    for name, value in message.items():
        if name not in ("emailAttachmentList", *BOOLEAN_FIELDS) and not isinstance(value, str | type(None)):
            problems.append(f"{name} must be a string")
    return problems


def _attachment_problems(where: str, item: Any) -> list[str]:
    """The documented rules of one document in ``emailAttachmentList``."""
    if not isinstance(item, dict):
        return [f"{where} must be an object"]
    problems = []
    content = item.get("attachmentContent")
    if not isinstance(content, str) or decode_base64(content) is None:
        problems.append(f"{where}.attachmentContent must be Base64")
    for name in ATTACHMENT_TEXT_FIELDS:
        if not isinstance(item.get(name), str | type(None)):
            problems.append(f"{where}.{name} must be a string")
    kind = item.get("attachmentClass")
    if isinstance(kind, str) and not is_mime_type(kind):
        problems.append(f"{where}.attachmentClass must be a media type")
    return problems + _file_name_problems(where + ".", item)


def _file_name_problems(where: str, fields: dict[str, Any]) -> list[str]:
    """The document: "The extensions should not be added to the attachmentFileName or xdmFileName"."""
    return [
        f"{where}{name} must not carry an extension"
        for name in FILE_NAME_FIELDS
        if isinstance(fields.get(name), str) and EXTENSION.search(fields[name])
    ]
