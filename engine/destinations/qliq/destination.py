"""Qliq Cloud Messaging: secure messages to Qliq members, groups, SMS and non-Qliq users.

``POST /secure_messages/send`` with the ``api_key`` in the body. One attachment per request:
further attachments go as follow-up requests in the conversation the first one opened, and
the conversation id is returned so the queue can thread later messages (e.g. per patient and
order) by passing it back in.

Conflicts in the vendor document, and how they are resolved here:

* Encoding: query string, form, multipart and JSON are all shown; JSON is required above 150
  characters of text. We always send JSON: it works for every length and carries the
  attachment inline, so there is one request shape to test.
* The attachment keys are printed with spaces (``content type``, ``file name``); we send
  ``content_type`` and ``file_name``, the spelling every other key in the API uses.
* Responses spell ``conversation_id`` and ``Conversation_id``: keys are read case-insensitively.
* A group/subgroup QliqID and a mobile number are both strings of digits. The annexes tell
  them apart: a payload with ``no_phi`` is an SMS and one with ``send_non_qliq_user`` goes to
  a non-Qliq user, so ``to`` must then be a mobile number; otherwise digits are a QliqID.
* SMS is not HIPAA compliant: ``no_phi`` must be true, and an SMS payload with attachments
  (clinical documents are PHI) is refused before the ACK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import requests

from engine.destinations import rules
from engine.destinations.base import DestinationError, Outcome, Problem, SendResult, StatusUpdate
from engine.destinations.payload import (
    DATA_TYPE,
    TABLE_VALUE,
    as_bool,
    as_number,
    check_payload,
    is_blank,
)
from engine.destinations.transport import HttpDestination, get_ci, http_settings_spec, json_body
from engine.destinations.webhook_settings import path_token_problem, webhook_fields
from engine.spec import Problem as SettingsProblem
from engine.spec import Spec, boolean, integer, number, objects, path, string

SEND_PATH = "/secure_messages/send"
STATUS_PATH = "/secure_messages/message_status"
MAX_EXPIRY_MINUTES = 7 * 24 * 60
REPLY_MAX_BODY_BYTES = 256 * 1024
"""A reply is small (text, attachment metadata, an optional thumbnail), RSA-encrypted in 256-byte
blocks and Base64'd; the attachment itself is downloaded separately."""
_REPLY_SECRETS = ("reply_webhook_token", "reply_webhook_password")
_REPLY_FEATURES = ("reply_key_file", "poll_replies_s")  # either one files replies, marked read
ATTACHMENT_TYPES = (
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "image/png",
    "image/jpeg",
)
_QLIQ_ID = re.compile(r"^\d+$")
_MOBILE_NUMBER = re.compile(r"^\+?\d{10,15}$")

ATTACHMENT_SPEC = Spec(
    "qliq attachment",
    "A PDF, Word, Excel, PNG or JPG document; each one after the first is a follow-up request.",
    (
        string("content_type", "MIME type of the document.", required=True, choices=ATTACHMENT_TYPES),
        string("file_name", "File name shown to the recipient.", required=True),
        string("base64", "The document, Base64.", required=True),
    ),
)
PAYLOAD_SPEC = Spec(
    "qliq payload",
    "What a mapping produces for a Qliq secure message, SMS or non-Qliq message.",
    (
        string(
            "to",
            "Member e-mail, group/subgroup QliqID, or mobile number (SMS, non-Qliq).",
            required=True,
            example="oncall@example.org",
        ),
        string("from", "E-mail of the sending member; default: the group's point of contact."),
        string("subject", "Subject; Qliq groups messages by it."),
        string("priority", "Message priority.", choices=("fyi", "asap", "urgent")),
        string("text", "The message text.", required=True),
        boolean("no_phi", "SMS to a patient: must be true (SMS may carry no PHI)."),
        string("reply_posting_url", "SMS only: webhook for the patient's replies."),
        boolean("send_non_qliq_user", "Send a secure link to a non-Qliq user: must be true."),
        integer(
            "expiry_in_minutes",
            "Non-Qliq only: link lifetime, at most 7 days.",
            min=1,
            max=MAX_EXPIRY_MINUTES,
        ),
        objects("attachments", ATTACHMENT_SPEC),
    ),
)


class QliqDestination(HttpDestination):
    """Qliq Cloud Messaging (``/secure_messages/send``)."""

    kind = "qliq"
    has_status_api = True
    settings_spec = http_settings_spec(
        "qliq",
        "How to reach Qliq Cloud Messaging.",
        string("api_key", "API key from the Qliq Admin Portal.", required=True, secret=True),
        path(
            "reply_key_file",
            "RSA private key replies are encrypted for (`courier qliq keys`); "
            "with `courier run --webhooks` it serves the reply webhook. Passphrase: "
            "$COURIER_QLIQ_KEY_PASSPHRASE.",
        ),
        string(
            "reply_sender",
            "Our Qliq member (e-mail) whose key encrypts the replies; required with "
            "`reply_key_file` or `poll_replies_s` (the mandatory `sender` of update_message_status).",
            default="",
        ),
        string(
            "reply_webhook_token",
            "Secret path segment of the reply webhook URL: at least 22 random URL-safe characters "
            "(128 bits). The webhook needs it or `reply_webhook_password`.",
            secret=True,
        ),
        string("reply_webhook_user", "Basic auth user of the reply webhook.", default="qliq"),
        string("reply_webhook_password", "Basic auth password of the reply webhook.", secret=True),
        *webhook_fields(REPLY_MAX_BODY_BYTES, "the reply webhook"),
        number(
            "poll_replies_s",
            "Also fetch replies with get_replies every so many seconds "
            "(SMS replies, or replies missed while the webhook was down).",
            min=1.0,
        ),
    )
    payload_spec = PAYLOAD_SPEC
    auth_failed_reason = "Qliq api_key rejected: generate a new key in the Admin Portal"

    @classmethod
    def settings_problems(cls, settings: Mapping[str, Any], given: Collection[str]) -> list[SettingsProblem]:
        """Replies (webhook or poll) are marked read with update_message_status, whose ``sender``
        is mandatory. The reply webhook needs a secret of ours: Qliq encrypts a reply with our
        *public* key, which anyone can do, and documents no authentication for the POST."""
        problems = []
        if any(key in given for key in _REPLY_FEATURES):
            problems += _reply_sender_problems(settings.get("reply_sender"))
        if "reply_key_file" not in given:
            return problems
        token = settings.get("reply_webhook_token")
        if isinstance(token, str) and token and (problem := path_token_problem(token)):
            problems.append(SettingsProblem("reply_webhook_token", problem))
        if not any(key in given and settings.get(key) != "" for key in _REPLY_SECRETS):
            problems.append(
                SettingsProblem(
                    "reply_key_file",
                    "the reply webhook would take anyone's POST: set reply_webhook_token (a random "
                    "path segment) or reply_webhook_password (Basic auth), or both",
                )
            )
        return problems

    def validate(self, payload: Mapping[str, Any]) -> list[Problem]:
        problems = check_payload(PAYLOAD_SPEC, payload)
        sms = not is_blank(payload.get("no_phi"))
        non_qliq = not is_blank(payload.get("send_non_qliq_user"))
        if sms and non_qliq:
            problems.append(
                Problem(
                    "send_non_qliq_user",
                    DATA_TYPE,
                    "send_non_qliq_user with no_phi: SMS or non-Qliq, not both",
                )
            )
        if sms and as_bool(payload["no_phi"]) is False:
            problems.append(Problem("no_phi", TABLE_VALUE, "SMS may not carry PHI: no_phi must be true"))
        if sms and not is_blank(payload.get("attachments")):
            problems.append(Problem("attachments", DATA_TYPE, "SMS cannot carry attachments (PHI)"))
        if non_qliq and as_bool(payload["send_non_qliq_user"]) is False:
            problems.append(Problem("send_non_qliq_user", TABLE_VALUE, "send_non_qliq_user must be true"))
        if not non_qliq and not is_blank(payload.get("expiry_in_minutes")):
            problems.append(
                Problem("expiry_in_minutes", DATA_TYPE, "expiry_in_minutes applies only to non-Qliq users")
            )
        if not sms and not is_blank(payload.get("reply_posting_url")):
            problems.append(Problem("reply_posting_url", DATA_TYPE, "reply_posting_url applies only to SMS"))
        problems += _address_problems(payload, needs_mobile=sms or non_qliq)
        for i, attachment in enumerate(payload.get("attachments") or ()):
            content = attachment.get("base64") if isinstance(attachment, Mapping) else None
            if isinstance(content, str) and content and rules.base64_decoded_size(content) is None:
                key = f"attachments[{i}].base64"
                problems.append(Problem(key, DATA_TYPE, f"{key} is not valid Base64"))
        return problems

    def send(
        self,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str,
        conversation_id: str | None = None,
        resume: str | None = None,
    ) -> SendResult:
        """Send the message, then each further attachment in the same conversation.

        Qliq has no idempotency key. So that the care team never sees the message twice, a
        failed follow-up returns ``progress`` (the requests Qliq accepted, their ids and the
        conversation); the queue stores it with the delivery and passes it back as ``resume``,
        and the next attempt, even after a restart, starts at the failed follow-up.
        """
        requests_to_send = build_requests(payload, self.settings["api_key"])
        done, message_ids, known = _resumed(resume)
        conversation_id = conversation_id or known
        result = SendResult(Outcome.ACCEPTED)
        for n, body in enumerate(requests_to_send, start=1):
            if n <= done:
                continue
            if conversation_id:
                body["conversation_id"] = conversation_id
            if n > done + 1 and not self.pace():  # the queue paced this attempt's first request
                result = SendResult(Outcome.RETRY, reason="not sent: the engine is stopping")
            else:
                result = self.request("POST", SEND_PATH, json=body, on_success=_accepted)
            conversation_id = result.conversation_id or conversation_id
            if result.outcome is not Outcome.ACCEPTED:
                prefix = f"request {n} of {len(requests_to_send)}: " if n > 1 else ""
                return SendResult(
                    result.outcome,
                    vendor_ids=message_ids,
                    conversation_id=conversation_id,
                    reason=prefix + result.reason,
                    retry_after_s=result.retry_after_s,
                    http_status=result.http_status,
                    progress=_progress(n - 1, message_ids, conversation_id) if n > 1 else None,
                    vendor_text=result.vendor_text,
                    hold=result.hold,
                )
            if result.remote_id:
                message_ids["message_id" if n == 1 else f"message_id_{n}"] = result.remote_id
        return SendResult(
            Outcome.ACCEPTED,
            remote_id=message_ids.get("message_id"),
            vendor_ids=message_ids,
            conversation_id=conversation_id,
            http_status=result.http_status,
        )

    def check_status(self, remote_id: str) -> list[StatusUpdate]:
        """One update per recipient; an empty list from Qliq means nobody has it yet."""
        recipients = self.fetch_json(
            "GET",
            STATUS_PATH,
            purpose="Qliq status query",
            params={"api_key": self.settings["api_key"], "message_id": remote_id},
        )
        if not isinstance(recipients, list):
            raise DestinationError("Qliq status query failed: the answer is not a list")
        if not recipients:
            return [StatusUpdate("pending", detail="not delivered to any recipient yet")]
        return [_recipient_status(r) for r in recipients if isinstance(r, Mapping)]


def _progress(done: int, message_ids: Mapping[str, str], conversation_id: str | None) -> str:
    """How far a send got, for ``resume``: Qliq's ids only, never message content."""
    return json.dumps({"done": done, "message_ids": dict(message_ids), "conversation_id": conversation_id})


def _resumed(resume: str | None) -> tuple[int, dict[str, str], str | None]:
    """(requests already accepted, their message ids, the conversation) from :func:`_progress`."""
    if not resume:
        return 0, {}, None
    progress = json.loads(resume)
    return progress["done"], dict(progress["message_ids"]), progress["conversation_id"]


def build_requests(payload: Mapping[str, Any], api_key: str) -> list[dict[str, Any]]:
    """The JSON bodies to send in order: the message with its first attachment, then the rest."""
    message: dict[str, Any] = {"api_key": api_key}
    for key in ("to", "from", "subject", "priority", "text", "reply_posting_url"):
        if payload.get(key):
            message[key] = payload[key]
    for key in ("no_phi", "send_non_qliq_user"):
        if not is_blank(payload.get(key)):
            message[key] = as_bool(payload[key])
    if not is_blank(payload.get("expiry_in_minutes")):
        message["expiry_in_minutes"] = as_number(payload["expiry_in_minutes"])
    attachments = [
        {"content_type": a["content_type"], "file_name": a["file_name"], "base64": a["base64"]}
        for a in payload.get("attachments") or ()
    ]
    if not attachments:
        return [message]
    bodies = [{**message, "attachment": attachments[0]}]
    for n, attachment in enumerate(attachments[1:], start=2):
        follow_up = {k: v for k, v in message.items() if k in ("api_key", "to", "from", "subject")}
        # text is mandatory; a neutral text avoids repeating (possibly PHI) content
        follow_up["text"] = f"Attachment {n} of {len(attachments)}"
        bodies.append({**follow_up, "attachment": attachment})
    return bodies


def _accepted(response: requests.Response) -> SendResult:
    body = json_body(response)
    message_id, conversation_id = get_ci(body, "message_id"), get_ci(body, "conversation_id")
    return SendResult(
        Outcome.ACCEPTED,
        remote_id=str(message_id) if message_id else None,
        conversation_id=str(conversation_id) if conversation_id else None,
        reason=str(get_ci(body, "status") or ""),
    )


def _reply_sender_problems(sender: Any) -> list[SettingsProblem]:
    """``reply_sender`` must be an e-mail; a ``${VAR}`` not yet read (``--skip-env``) passes."""
    if isinstance(sender, str) and (rules.is_email(sender) or "${" in sender):
        return []
    return [
        SettingsProblem(
            "reply_sender",
            "replies are marked read with update_message_status, whose sender is mandatory: "
            "set reply_sender to the e-mail of the Qliq member the replies are encrypted for",
        )
    ]


def _address_problems(payload: Mapping[str, Any], *, needs_mobile: bool) -> list[Problem]:
    problems = []
    to = payload.get("to")
    if isinstance(to, str) and to:
        if needs_mobile and not _MOBILE_NUMBER.match(to):
            problems.append(Problem("to", DATA_TYPE, "to must be a mobile number for SMS/non-Qliq"))
        elif not needs_mobile and not (rules.is_email(to) or _QLIQ_ID.match(to)):
            problems.append(Problem("to", DATA_TYPE, "to must be a member e-mail or a QliqID"))
    sender = payload.get("from")
    if isinstance(sender, str) and sender and not rules.is_email(sender):
        problems.append(Problem("from", DATA_TYPE, "from must be a member's e-mail address"))
    return problems


def _recipient_status(recipient: Mapping[str, Any]) -> StatusUpdate:
    who = recipient.get("to")
    for key, state in (("read_at", "read"), ("delivered_at", "delivered")):
        epoch = as_number(recipient.get(key))
        if epoch is not None:
            return StatusUpdate(state, at=datetime.fromtimestamp(epoch, UTC), recipient=who)
    return StatusUpdate("pending", recipient=who)
